/* A bytecode interpreter: a small stack machine run by a switch loop.  A little
 * assembler with labels builds the program at start-up; it counts primes by trial
 * division, sums Collatz chain lengths and computes Fibonacci numbers by recursive
 * calls, and is run several times with different limits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum op {
    HALT, PUSH, LOAD, STORE, ADD, SUB, MUL, DIV, MOD, LT, EQ, JZ, JNZ, JMP,
    DUP, DROP, SWAP, CALL, RET, EMIT, INC, AND, SHR,
};

enum var { N, J, COUNT, X, LEN, TOTAL, LIMIT, I };

#define ROUNDS 4

static int64_t vars[16];
static int64_t stack[256];
static int64_t frames[64];
static int32_t program[1024];
static int pc_end;
static int labels[32];
static struct { int at, label; } fixups[64];
static int nfixups;
static uint64_t emitted = 0xcbf29ce484222325ULL;
static uint64_t steps;

/* --- assembler --- */
static void op(int32_t w) { program[pc_end++] = w; }
static void op1(int32_t w, int32_t arg) { op(w); op(arg); }
static void label(int l) { labels[l] = pc_end; }
static void jump(int32_t w, int l)
{
    op(w);
    fixups[nfixups].at = pc_end;
    fixups[nfixups++].label = l;
    op(-1);
}

static void build(void)
{
    enum { OUTER, INNER, PRIME, NEXT, PRIMES_DONE, COLLATZ, CHAIN, EVEN, STEP,
           CHAIN_DONE, COLLATZ_DONE, FIB, FIB_BASE };

    /* count primes below LIMIT */
    op1(PUSH, 0); op1(STORE, COUNT);
    op1(PUSH, 2); op1(STORE, N);
    label(OUTER);
    op1(LOAD, N); op1(LOAD, LIMIT); op(LT); jump(JZ, PRIMES_DONE);
    op1(PUSH, 2); op1(STORE, J);
    label(INNER);                                   /* n < j*j: prime */
    op1(LOAD, N); op1(LOAD, J); op(DUP); op(MUL); op(LT); jump(JNZ, PRIME);
    op1(LOAD, N); op1(LOAD, J); op(MOD); jump(JZ, NEXT);
    op1(LOAD, J); op(INC); op1(STORE, J); jump(JMP, INNER);
    label(PRIME);
    op1(LOAD, COUNT); op(INC); op1(STORE, COUNT);
    label(NEXT);
    op1(LOAD, N); op(INC); op1(STORE, N); jump(JMP, OUTER);
    label(PRIMES_DONE);
    op1(LOAD, COUNT); op(EMIT);

    /* sum of Collatz chain lengths for 1 .. LIMIT/4 */
    op1(PUSH, 0); op1(STORE, TOTAL);
    op1(PUSH, 1); op1(STORE, I);
    label(COLLATZ);
    op1(LOAD, I); op1(LOAD, LIMIT); op1(PUSH, 4); op(DIV); op(LT); jump(JZ, COLLATZ_DONE);
    op1(LOAD, I); op1(STORE, X); op1(PUSH, 0); op1(STORE, LEN);
    label(CHAIN);
    op1(LOAD, X); op1(PUSH, 1); op(EQ); jump(JNZ, CHAIN_DONE);
    op1(LOAD, X); op1(PUSH, 1); op(AND); jump(JZ, EVEN);
    op1(LOAD, X); op1(PUSH, 3); op(MUL); op(INC); op1(STORE, X); jump(JMP, STEP);
    label(EVEN);
    op1(LOAD, X); op1(PUSH, 1); op(SHR); op1(STORE, X);
    label(STEP);
    op1(LOAD, LEN); op(INC); op1(STORE, LEN); jump(JMP, CHAIN);
    label(CHAIN_DONE);
    op1(LOAD, TOTAL); op1(LOAD, LEN); op(ADD); op1(STORE, TOTAL);
    op1(LOAD, I); op(INC); op1(STORE, I); jump(JMP, COLLATZ);
    label(COLLATZ_DONE);
    op1(LOAD, TOTAL); op(EMIT);

    /* fib(LIMIT / 1000 + 8), recursive */
    op1(LOAD, LIMIT); op1(PUSH, 1000); op(DIV); op1(PUSH, 8); op(ADD);
    jump(CALL, FIB); op(DUP); op(EMIT); op(HALT);
    label(FIB);                                     /* ( n -- fib(n) ) */
    op(DUP); op1(PUSH, 2); op(LT); jump(JNZ, FIB_BASE);
    op(DUP); op1(PUSH, 1); op(SUB); jump(CALL, FIB);
    op(SWAP); op1(PUSH, 2); op(SUB); jump(CALL, FIB);
    op(ADD);
    label(FIB_BASE);
    op(RET);

    for (int i = 0; i < nfixups; i++)
        program[fixups[i].at] = labels[fixups[i].label];
}

/* --- interpreter --- */
static int64_t run(const int32_t *code)
{
    int64_t *sp = stack;
    int64_t *fp = frames;
    int pc = 0;
    for (;;) {
        steps++;
        switch ((enum op)code[pc++]) {
        case HALT:
            return sp > stack ? sp[-1] : 0;
        case PUSH:
            *sp++ = code[pc++];
            break;
        case LOAD:
            *sp++ = vars[code[pc++]];
            break;
        case STORE:
            vars[code[pc++]] = *--sp;
            break;
        case ADD:
            sp--;
            sp[-1] += sp[0];
            break;
        case SUB:
            sp--;
            sp[-1] -= sp[0];
            break;
        case MUL:
            sp--;
            sp[-1] *= sp[0];
            break;
        case DIV:
            sp--;
            sp[-1] /= sp[0];
            break;
        case MOD:
            sp--;
            sp[-1] %= sp[0];
            break;
        case LT:
            sp--;
            sp[-1] = sp[-1] < sp[0];
            break;
        case EQ:
            sp--;
            sp[-1] = sp[-1] == sp[0];
            break;
        case AND:
            sp--;
            sp[-1] &= sp[0];
            break;
        case SHR:
            sp--;
            sp[-1] >>= sp[0];
            break;
        case JZ:
            pc = *--sp == 0 ? code[pc] : pc + 1;
            break;
        case JNZ:
            pc = *--sp != 0 ? code[pc] : pc + 1;
            break;
        case JMP:
            pc = code[pc];
            break;
        case DUP:
            sp[0] = sp[-1];
            sp++;
            break;
        case DROP:
            sp--;
            break;
        case SWAP: {
            int64_t t = sp[-1];
            sp[-1] = sp[-2];
            sp[-2] = t;
            break;
        }
        case CALL:
            *fp++ = pc + 1;
            pc = code[pc];
            break;
        case RET:
            pc = (int)*--fp;
            break;
        case EMIT:
            emitted = (emitted ^ (uint64_t)*--sp) * 0x100000001b3ULL;
            break;
        case INC:
            sp[-1]++;
            break;
        default:
            printf("bad opcode %d at %d\n", code[pc - 1], pc - 1);
            exit(1);
        }
    }
}

int main(void)
{
    build();
    for (int r = 0; r < ROUNDS; r++) {
        vars[LIMIT] = 10000 + 1000 * r;
        int64_t last = run(program);
        printf("round %d: limit %lld primes %lld collatz %lld fib %lld\n", r,
               (long long)vars[LIMIT], (long long)vars[COUNT], (long long)vars[TOTAL],
               (long long)last);
    }
    printf("bytecode: %llu VM steps\n", (unsigned long long)steps);
    emitted ^= steps;
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)emitted);
    return 0;
}
