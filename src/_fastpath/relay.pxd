# cython: language_level=3
from includes.engine cimport ls_engine


cdef class Engine:
    cdef ls_engine *engine
    cdef readonly int workers
    cdef readonly str splice
    cdef readonly int pipe_size
    cdef readonly int bufsize
    cdef readonly int io_uring_workers
    cdef dict _line_buffers  # take_records': listener id -> _LineBuffer, kept between calls

    cdef int _check(self) except -1
