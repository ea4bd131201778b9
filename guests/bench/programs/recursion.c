/* Recursion: the classic call-heavy kernels. Naive Fibonacci, Ackermann's function,
 * an N-queens backtracking search, and a binary tree built, summed and mirrored by
 * recursive walks (nodes from a static pool); every call and return is a jump the
 * translator cannot see through at compile time. */
#include <stdint.h>
#include <stdio.h>

#define TREE_DEPTH 16
#define POOL       (1 << (TREE_DEPTH + 1))
#define ROUNDS     10

struct node {
    struct node *left, *right;
    uint32_t value;
};

static struct node pool[POOL];
static unsigned used;
static uint64_t checksum = 1469598103934665603ULL;

static void mix(uint64_t v)
{
    checksum ^= v;
    checksum *= 1099511628211ULL;
}

static uint32_t fib(uint32_t n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

static uint64_t ackermann(uint64_t m, uint64_t n)
{
    if (m == 0)
        return n + 1;
    if (n == 0)
        return ackermann(m - 1, 1);
    return ackermann(m - 1, ackermann(m, n - 1));
}

static int safe(const int *cols, int row, int col)
{
    for (int r = 0; r < row; r++) {
        int d = cols[r] - col;
        if (d == 0 || d == row - r || d == r - row)
            return 0;
    }
    return 1;
}

static unsigned queens(int *cols, int row, int n)
{
    if (row == n)
        return 1;
    unsigned found = 0;
    for (int col = 0; col < n; col++)
        if (safe(cols, row, col)) {
            cols[row] = col;
            found += queens(cols, row + 1, n);
        }
    return found;
}

static struct node *build(int depth, uint32_t seed)
{
    if (used >= POOL)
        return NULL;
    struct node *t = &pool[used++];
    t->value = seed * 2654435761u >> 7;
    t->left = depth > 0 ? build(depth - 1, seed * 2 + 1) : NULL;
    t->right = depth > 0 ? build(depth - 1, seed * 2 + 2) : NULL;
    return t;
}

static uint64_t sum(const struct node *t, int depth)
{
    if (!t)
        return 0;
    return t->value * (uint64_t)(depth + 1) + sum(t->left, depth + 1) + sum(t->right, depth + 1);
}

static void mirror(struct node *t)
{
    if (!t)
        return;
    struct node *l = t->left;
    t->left = t->right;
    t->right = l;
    mirror(t->left);
    mirror(t->right);
}

static uint32_t leftmost(const struct node *t)
{
    return t->left ? leftmost(t->left) : t->value;
}

int main(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        uint32_t f = fib(25 + round % 3);
        mix(f);
        mix(ackermann(2, 300 + round) + ackermann(3, 5));
        int cols[10];
        mix(queens(cols, 0, 8 + round % 2));
        used = 0;
        struct node *root = build(TREE_DEPTH, round + 1);
        mix(sum(root, 0));
        mirror(root);
        mix(leftmost(root));
        mix(sum(root, 0));
    }
    printf("recursion: %d rounds, fib(27) = %u\n", ROUNDS, fib(27));
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
