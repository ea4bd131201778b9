/* strings: text work: word reversal, a Caesar shift, letter counts, comparisons and a
 * CRC-32 (slicing by 4: 4 KiB of tables in .rodata, so this program's text spans two
 * pages, the first of them text only: R+X) on a copy (on the stack) of a text in .data
 * (in the same page as the end of the text), which is rotated in place once per round;
 * writes a summary line. */
#include "ulib.h"

/* CRC-32 (reflected, 0xEDB88320) tables, built by the preprocessor: each table is
 * linear over GF(2) in its index, the XOR of the entries for the index's set bits. */
#define B(n, i, k) (((n) >> (i) & 1) ? (k) : 0u)
#define LIN(n, k0, k1, k2, k3, k4, k5, k6, k7) \
	(B(n, 0, k0) ^ B(n, 1, k1) ^ B(n, 2, k2) ^ B(n, 3, k3) ^ B(n, 4, k4) ^ \
	 B(n, 5, k5) ^ B(n, 6, k6) ^ B(n, 7, k7))
#define T0(n) LIN(n, 0x77073096u, 0xee0e612cu, 0x076dc419u, 0x0edb8832u, 0x1db71064u, \
		  0x3b6e20c8u, 0x76dc4190u, 0xedb88320u)
#define T1(n) LIN(n, 0x191b3141u, 0x32366282u, 0x646cc504u, 0xc8d98a08u, 0x4ac21251u, \
		  0x958424a2u, 0xf0794f05u, 0x3b83984bu)
#define T2(n) LIN(n, 0x01c26a37u, 0x0384d46eu, 0x0709a8dcu, 0x0e1351b8u, 0x1c26a370u, \
		  0x384d46e0u, 0x709a8dc0u, 0xe1351b80u)
#define T3(n) LIN(n, 0xb8bc6765u, 0xaa09c88bu, 0x8f629757u, 0xc5b428efu, 0x5019579fu, \
		  0xa032af3eu, 0x9b14583du, 0xed59b63bu)
#define R4(f, n) f(n), f((n) + 1), f((n) + 2), f((n) + 3)
#define R16(f, n) R4(f, n), R4(f, (n) + 4), R4(f, (n) + 8), R4(f, (n) + 12)
#define R64(f, n) R16(f, n), R16(f, (n) + 16), R16(f, (n) + 32), R16(f, (n) + 48)
#define R256(f) R64(f, 0), R64(f, 64), R64(f, 128), R64(f, 192)

static const uint32_t crc_tab[4][256] = {{R256(T0)}, {R256(T1)}, {R256(T2)}, {R256(T3)}};

static uint32_t crc32(uint32_t crc, const char *p, size_t n)
{
	crc = ~crc;
	for (; n >= 4; n -= 4, p += 4) {
		crc ^= (uint32_t)(unsigned char)p[0] | (uint32_t)(unsigned char)p[1] << 8 |
		       (uint32_t)(unsigned char)p[2] << 16 | (uint32_t)(unsigned char)p[3] << 24;
		crc = crc_tab[3][crc & 0xff] ^ crc_tab[2][(crc >> 8) & 0xff] ^
		      crc_tab[1][(crc >> 16) & 0xff] ^ crc_tab[0][crc >> 24];
	}
	while (n--)
		crc = crc_tab[0][(crc ^ (unsigned char)*p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#define LONG_RUN (1L << 20)

static char text[] = "the quick brown fox jumps over the lazy dog while five boxing "
		     "wizards jump quickly and pack my box with five dozen liquor jugs";
static long rounds_done = 1;		/* .data too */

static void reverse(char *a, char *b)
{
	while (a < b) {
		char t = *a;
		*a++ = *b;
		*b-- = t;
	}
}

static void reverse_words(char *s)
{
	char *w = s;
	for (char *p = s;; p++) {
		if (*p == ' ' || *p == 0) {
			reverse(w, p - 1);
			if (*p == 0)
				break;
			w = p + 1;
		}
	}
	reverse(s, s + strlen(s) - 1);
}

static void shift(char *s, int k)
{
	for (; *s; s++)
		if (*s >= 'a' && *s <= 'z')
			*s = (char)('a' + (*s - 'a' + k) % 26);
}

static long count_letters(const char *s, long *counts)
{
	long vowels = 0;
	for (int i = 0; i < 26; i++)
		counts[i] = 0;
	for (; *s; s++) {
		if (*s >= 'a' && *s <= 'z') {
			counts[*s - 'a']++;
			if (*s == 'a' || *s == 'e' || *s == 'i' || *s == 'o' || *s == 'u')
				vowels++;
		}
	}
	return vowels;
}

long main(long arg)
{
	char work[sizeof text];
	long counts[26];
	long reps = arg & LONG_RUN ? 8 : 1;
	long k = arg & 0xffff;
	u64 h = 0xcbf29ce484222325UL;
	long vowels = 0, same = 0;
	uint32_t crc = 0;
	for (long rep = 0; rep < reps; rep++) {
		for (int it = 0; it < 4; it++) {
			strcpy(work, text);
			reverse_words(work);
			shift(work, (int)((k + it + rep) % 26));
			vowels += count_letters(work, counts);
			reverse_words(work);
			shift(work, (int)(26 - (k + it + rep) % 26));
			same += strcmp(work, text) == 0;
			rounds_done++;
			crc = crc32(crc, work, strlen(work));
			h = hash_bytes(h, work, strlen(work));
			h = hash_bytes(h, counts, sizeof counts);
		}
		/* rotate the text by one character, in place */
		char c = text[0];
		size_t n = strlen(text);
		memcpy(text, text + 1, n - 1);
		text[n - 1] = c;
		if (arg & LONG_RUN && rep % 4 == 3)
			sys_yield();
	}
	struct line l = {.n = 0};
	l_str(&l, "strings ");
	l_dec(&l, sys_getpid());
	l_str(&l, ": ");
	l_str(&l, text + 40);
	l_str(&l, " vowels ");
	l_dec(&l, vowels);
	l_str(&l, " same ");
	l_dec(&l, same);
	l_str(&l, " crc ");
	l_hex(&l, crc);
	l_send(&l);
	return (long)((h ^ (u64)vowels ^ (u64)rounds_done ^ crc) & 0x7fff);
}
