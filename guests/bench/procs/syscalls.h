/* System call numbers (a7) shared by the kernel and the user programs. */
#ifndef SYSCALLS_H
#define SYSCALLS_H

#define SYS_EXIT   0	/* exit(code): never returns */
#define SYS_WRITE  1	/* write(buf, len) -> len: bytes into the process's kernel buffer */
#define SYS_GETPID 2	/* getpid() -> pid */
#define SYS_YIELD  3	/* yield() -> 0: the next runnable process runs */
#define SYS_FORK   4	/* fork() -> child's pid in the parent, 0 in the child */
#define SYS_WAIT   5	/* wait(pid) -> the child's exit code, -1 if not a child */
#define SYS_EXEC   6	/* exec(prog, arg) -> -1 if no such program, else never returns */

/* The programs exec knows (their order in entry.S's blobs). */
#define PROG_INIT    0
#define PROG_STRINGS 1
#define PROG_SORT    2
#define PROG_SIEVE   3
#define PROG_FORKER  4
#define NPROGS       5

#endif
