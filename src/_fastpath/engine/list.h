/* list.h: the engine's one doubly-linked list, intrusive and circular, as
 * HAProxy's struct list or the kernel's list_head.
 *
 * A node (ls_list) is a member of the object it links; a list head is a node
 * of its own, empty when it points to itself. Linking and unlinking are a few
 * pointer stores, nothing is allocated. A node that is on no list has NULL
 * pointers, which is what calloc() gives it, so "is it linked" needs no flag.
 * Used for the listener's maxconn queue, the worker's sessions, its pool of
 * idle server connections and its list of HTTP sessions with bytes to write.
 */
#ifndef LS_LIST_H
#define LS_LIST_H

#include <stddef.h>

typedef struct ls_list {
    struct ls_list *n, *p; /* next, previous */
} ls_list;

/* The object holding `node` as its `member`. */
#define LS_LIST_ELEM(node, type, member) ((type *)((char *)(node) - offsetof(type, member)))

/* The first object of a list, or NULL when it is empty. */
#define LS_LIST_FIRST(head, type, member)                                                  \
    (ls_list_empty(head) ? NULL : LS_LIST_ELEM((head)->n, type, member))

/* Walk a list's nodes (`pos`, an ls_list *). */
#define LS_LIST_FOR_EACH(pos, head) for ((pos) = (head)->n; (pos) != (head); (pos) = (pos)->n)

/* The same, where `pos` may be unlinked inside the loop (`tmp` holds the next). */
#define LS_LIST_FOR_EACH_SAFE(pos, tmp, head)                                              \
    for ((pos) = (head)->n, (tmp) = (pos)->n; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->n)

static inline void ls_list_init(ls_list *head) { head->n = head->p = head; }

static inline int ls_list_empty(const ls_list *head) { return head->n == head; }

static inline int ls_list_linked(const ls_list *node) { return node->n != NULL; }

static inline void ls_list_insert_(ls_list *prev, ls_list *node, ls_list *next)
{
    node->p = prev;
    node->n = next;
    prev->n = node;
    next->p = node;
}

static inline void ls_list_push_front(ls_list *head, ls_list *node)
{
    ls_list_insert_(head, node, head->n);
}

static inline void ls_list_push_back(ls_list *head, ls_list *node)
{
    ls_list_insert_(head->p, node, head);
}

static inline void ls_list_del(ls_list *node)
{
    node->p->n = node->n;
    node->n->p = node->p;
    node->n = node->p = NULL;
}

#endif
