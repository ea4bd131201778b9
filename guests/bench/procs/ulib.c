/* The user programs' small library: string functions, formatting, hashing. */
#include "ulib.h"

void *memcpy(void *d, const void *s, size_t n)
{
	char *p = d;
	const char *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

void *memset(void *d, int c, size_t n)
{
	char *p = d;
	while (n--)
		*p++ = (char)c;
	return d;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

char *strcpy(char *d, const char *s)
{
	char *r = d;
	while ((*d++ = *s++))
		;
	return r;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return (unsigned char)*a - (unsigned char)*b;
}

void l_str(struct line *l, const char *s)
{
	while (*s && l->n < (int)sizeof l->buf - 1)
		l->buf[l->n++] = *s++;
}

void l_dec(struct line *l, long v)
{
	char t[24];
	int n = 0;
	unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
	do {
		t[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		t[n++] = '-';
	while (n && l->n < (int)sizeof l->buf - 1)
		l->buf[l->n++] = t[--n];
}

void l_hex(struct line *l, u64 v)
{
	for (int i = 60; i >= 0 && l->n < (int)sizeof l->buf - 1; i -= 4)
		l->buf[l->n++] = "0123456789abcdef"[(v >> i) & 0xf];
}

void l_send(struct line *l)
{
	l->buf[l->n++] = '\n';
	sys_write(l->buf, l->n);
	l->n = 0;
}

u64 hash_bytes(u64 h, const void *p, size_t n)
{
	const unsigned char *b = p;
	while (n--)
		h = (h ^ *b++) * 0x100000001b3UL;
	return h;
}
