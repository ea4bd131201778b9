/* String handling: building lines with snprintf and strcat, tokenising with strtok_r,
 * parsing numbers with strtol, searching with strstr/strchr, comparing with
 * strcmp/strncmp, and case conversion, over a text made of a fixed paragraph. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 110

static const char paragraph[] =
    "The quick brown fox jumps over the lazy dog; 42 boxes of 7 jugs, "
    "pack my box with five dozen liquor jugs, 1024 wizards quickly jinx the gnome "
    "and sphinx of black quartz judge my vow at 365 days a year, every year.";

static const char *const needles[] = { "fox", "jugs", "quartz", "year", "gnome", "zebra", "box w" };

static char text[8192];
static char line[256];
static char work[8192];
static char *tokens[1024];
static uint64_t checksum = 0x84222325cbf29ce4ULL;

static void mix(uint64_t v)
{
    checksum = (checksum ^ v) * 0x100000001b3ULL;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        /* build the text: numbered lines */
        text[0] = 0;
        size_t len = 0;
        for (int i = 0; len + sizeof line < sizeof text; i++) {
            int n = snprintf(line, sizeof line, "%d:%s %d %x; ", i,
                             paragraph + (i * 13 + round) % 64, i * round - 17, i * 2654435761u);
            if (strlen(line) != (size_t)n) {
                printf("snprintf length mismatch\n");
                return 1;
            }
            strcat(text + len, line);
            len += (size_t)n;
        }
        mix(len);
        mix(hash_str(text));

        /* searching */
        for (size_t k = 0; k < sizeof needles / sizeof needles[0]; k++) {
            unsigned found = 0;
            for (const char *p = text; (p = strstr(p, needles[k])) != NULL; p++)
                found++;
            mix(found);
        }
        unsigned semis = 0;
        for (const char *p = text; (p = strchr(p, ';')) != NULL; p++)
            semis++;
        mix(semis);

        /* tokenising and number parsing */
        strcpy(work, text);
        char *save = NULL;
        int ntok = 0;
        long numbers = 0;
        for (char *t = strtok_r(work, " ,;:.", &save); t && ntok < 1024;
             t = strtok_r(NULL, " ,;:.", &save)) {
            char *end;
            long v = strtol(t, &end, 10);
            if (*end == 0 && end != t)
                numbers += v;
            else
                tokens[ntok++] = t;
        }
        mix((uint64_t)numbers);
        mix((uint64_t)ntok);

        /* sort the words, count distinct ones and those sharing a prefix */
        qsort(tokens, (size_t)ntok, sizeof tokens[0], cmp_str);
        int distinct = ntok > 0, prefix = 0;
        for (int i = 1; i < ntok; i++) {
            if (strcmp(tokens[i - 1], tokens[i]) != 0)
                distinct++;
            if (strncmp(tokens[i - 1], tokens[i], 3) == 0)
                prefix++;
        }
        mix((uint64_t)distinct);
        mix((uint64_t)prefix);

        /* case conversion and reversal of each word */
        for (int i = 0; i < ntok; i += 3) {
            char *w = tokens[i];
            size_t n = strlen(w);
            for (size_t a = 0; a < n; a++)
                w[a] = (char)toupper((unsigned char)w[a]);
            for (size_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
                char c = w[a];
                w[a] = w[b];
                w[b] = c;
            }
            mix(hash_str(w));
        }
    }
    printf("strings: %d rounds\n", ROUNDS);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
