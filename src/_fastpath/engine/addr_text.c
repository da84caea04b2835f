/* addr_text.c: a client address as the session log shows it, 192.0.2.1:5000
 * or [2001:db8::1]:5000 (part of the unity build engine.c).
 *
 * Written digit by digit rather than with inet_ntop and snprintf: a worker
 * formats one per logged session, and in the close scenario (a new connection
 * per request) the two libc calls with their format parsing were most of the
 * worker's user-space cost of `log: all`. The text is inet_ntop's, to the
 * byte: tests/unit/test_native_addr_text.py compares the two on the edge cases
 * (zero runs, ties, IPv4-mapped and -compatible addresses). */

static char *put_dec(char *at, unsigned v)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *at++ = digits[--n];
    return at;
}

static char *put_ipv4(char *at, const unsigned char *b)
{
    for (int i = 0; i < 4; i++) {
        if (i)
            *at++ = '.';
        at = put_dec(at, b[i]);
    }
    return at;
}

static char *put_hex(char *at, unsigned v)
{
    static const char hex[] = "0123456789abcdef";
    int shift = 12;
    while (shift > 0 && !(v >> shift))
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        *at++ = hex[(v >> shift) & 15];
    return at;
}

/* glibc's inet_ntop for AF_INET6: the longest run of two or more zero groups
 * (the first of equal ones) becomes "::"; an address whose first 96 bits are
 * zero but for a ::ffff: prefix, with a non-zero seventh group (IPv4-compatible)
 * or not (IPv4-mapped), ends in the dotted IPv4 form. */
static char *put_ipv6(char *at, const unsigned char *b)
{
    unsigned words[8];
    for (int i = 0; i < 8; i++)
        words[i] = (unsigned)b[2 * i] << 8 | b[2 * i + 1];
    int best = -1, best_len = 0, cur = -1, cur_len = 0;
    for (int i = 0; i < 8; i++) {
        if (words[i] == 0) {
            if (cur < 0)
                cur = i, cur_len = 0;
            cur_len++;
            if (cur_len > best_len)
                best = cur, best_len = cur_len;
        } else {
            cur = -1;
        }
    }
    if (best_len < 2)
        best = -1;
    for (int i = 0; i < 8; i++) {
        if (best >= 0 && i >= best && i < best + best_len) {
            if (i == best)
                *at++ = ':';
            continue;
        }
        if (i)
            *at++ = ':';
        if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)))
            return put_ipv4(at, b + 12);
        at = put_hex(at, words[i]);
    }
    if (best >= 0 && best + best_len == 8)
        *at++ = ':';
    return at;
}

size_t ls_addr_text(const struct sockaddr *sa, char *out, size_t size)
{
    char text[64]; /* the longest, [ffff:...:ffff]:65535, is 47 */
    char *at = text;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        at = put_ipv4(at, (const unsigned char *)&in4->sin_addr);
        *at++ = ':';
        at = put_dec(at, ntohs(in4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        *at++ = '[';
        at = put_ipv6(at, (const unsigned char *)&in6->sin6_addr);
        *at++ = ']';
        *at++ = ':';
        at = put_dec(at, ntohs(in6->sin6_port));
    } else {
        *at++ = '-';
    }
    size_t n = (size_t)(at - text);
    if (!size)
        return n;
    size_t kept = n < size ? n : size - 1; /* cut as snprintf cuts */
    memcpy(out, text, kept);
    out[kept] = 0;
    return n;
}
