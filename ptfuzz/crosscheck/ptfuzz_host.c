/*
 * ptfuzz-host: the real-kernel side of `ptfuzz crosscheck`.
 *
 * A root helper reads one request line from stdin and answers with exactly one line on stdout.
 * Each crosscheck process (pid 0..63) is a real child process; the root talks to it over an
 * AF_UNIX stream socket (a socket rather than a pipe so that a process that forks can hand the
 * new child's channel to the root with SCM_RIGHTS).  Requests (decimal, or 0x hex, integers):
 *
 *   hello                         -> ok PAGE PMD LA57 BASELINE method=scan|kpageflags|none va_bits=N
 *   probe                         -> ok key=value ...   (host behaviour, measured in a throwaway child)
 *   exec PID                      -> r 0                (a fresh process forked from the root)
 *   fork PARENT CHILD             -> r 0 | r -3 | r -17 | r -errno
 *   exit PID                      -> r 0 | r -3
 *   mmap PID ADDR LEN FLAGS       -> r RES   (bit0 MADV_HUGEPAGE, bit1 hugetlb PMD_SIZE, bit2 hugetlb PUD_SIZE)
 *   shm_mmap PID ADDR LEN OBJ PGOFF -> r RES
 *   hugetlb_mmap PID ADDR LEN FILE PGOFF -> r RES   (MAP_SHARED of hugetlbfs file 0..7, PMD-size pages)
 *   munmap PID ADDR LEN           -> r RES
 *   madvise PID ADDR LEN ADVICE   -> r RES   (0 DONTNEED, 1 HUGEPAGE, 2 NOHUGEPAGE, 3 COLLAPSE)
 *   fault PID ADDR WRITE          -> r 0 | r -14
 *   figures PID LO HI             -> f VMPTE_MINUS_BASELINE N ADDR1 ... ADDRN  (PMD-mapped blocks)
 *   pid PID                       -> ok OSPID           (for tests: the real pid)
 *   figall LO HI                  -> F N PID BYTES NB ADDR1 .. ADDRNB  PID ...  (figures of every live process)
 *   killall                       -> r 0                (every process exits: the end of a pipelined trace)
 *   hugepages                     -> ok N               (vm.nr_hugepages; -1 when there is no such sysctl)
 *   set_hugepages N               -> ok N               (writes vm.nr_hugepages, answers what it reads back:
 *                                                        crosscheck's pool of huge pages in a guest)
 *   quit                          -> (no reply) as EOF; as a guest's init, powers the guest off
 * hello also says release=UNAME_R machine=UNAME_M guest=0|1 hugetlb_files=0|8.
 *
 * As a QEMU guest's /init (pid 1, `ptfuzz crosscheck --kernel`): mounts /proc, /sys and /dev, takes the
 * console as its stdin and stdout in raw mode, sets THP to the defaults crosscheck assumes (enabled and
 * defrag madvise, shmem never), quiets printk and says `ptfuzz-host ready` before the first request.
 * Errors: `e MESSAGE` (bad line, pid out of range, address outside [2^44, 2^46), ...).
 * Environment: PTFUZZ_HOST_METHOD=kpageflags forces the pagemap + /proc/kpageflags fallback (tests).
 *
 * What each operation does, the processes and the figures are ptfuzz_ops.h's, which `ptfuzz repro-c`
 * reproducers inline too: this file is the line protocol, the guest's init and main.
 */
#define _GNU_SOURCE
#include "ptfuzz_ops.h"

#include <sys/utsname.h>

/* ---- the protocol's static buffers (no allocation after start-up) ---- */
static char inbuf[1 << 16];
static size_t in_start, in_end;
static char line[1 << 16];

static int out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ptf_vline(0, fmt, ap); /* a gone client ends the helper */
    va_end(ap);
    return 0;
}


/* Next line of stdin (NUL-terminated, without the newline), or NULL at EOF. */
static char *next_line(void)
{
    for (;;) {
        char *nl = memchr(inbuf + in_start, '\n', in_end - in_start);
        if (nl) {
            size_t n = (size_t)(nl - (inbuf + in_start));
            if (n >= sizeof line)
                n = sizeof line - 1;
            memcpy(line, inbuf + in_start, n);
            line[n] = 0;
            in_start = (size_t)(nl - inbuf) + 1;
            return line;
        }
        memmove(inbuf, inbuf + in_start, in_end - in_start);
        in_end -= in_start;
        in_start = 0;
        if (in_end == sizeof inbuf)
            in_end = 0; /* an absurdly long line: dropped, its tail then reads as a bad request */
        ssize_t r = read(0, inbuf + in_end, sizeof inbuf - in_end);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        in_end += (size_t)r;
    }
}

/* Figures of every live process in one reply: the guest transport pipelines a whole trace. */
static char figbuf[NPROC * 64 + MAXB * 16];

static int figall(uint64_t lo, uint64_t hi)
{
    if (lo >= hi || !in_window(lo, hi - lo))
        return out("e figall: [%#llx, %#llx) is not a range inside [2^44, 2^46)", (unsigned long long)lo,
                   (unsigned long long)hi);
    int n = 0;
    for (int s = 0; s < NPROC; s++)
        n += procs[s].used;
    size_t o = (size_t)snprintf(figbuf, sizeof figbuf, "F %d", n);
    for (int s = 0; s < NPROC; s++) {
        if (!procs[s].used)
            continue;
        if (send_req(s, C_FIGURES, lo, hi, 0, 0)) {
            lost(s, "figall");
            return out("e %s", ptf_err);
        }
        int r = read_reply(s);
        if (r == -2) {
            kill_slot(s);
            return out("e process %d timed out during figall", s);
        }
        if (r) {
            lost(s, "figall");
            return out("e %s", ptf_err);
        }
        if (outbuf[0] != 'f')
            return out("e process %d: figures: %s", s, outbuf);
        size_t len = strlen(outbuf + 1);
        if (o + len + 16 >= sizeof figbuf)
            return out("e figall: reply too long");
        o += (size_t)snprintf(figbuf + o, sizeof figbuf - o, " %d%s", s, outbuf + 1);
    }
    figbuf[o++] = '\n';
    if (write_all(1, figbuf, o))
        _exit(0);
    return 0;
}

struct cmd {
    const char *name;
    int nargs;
};
static const struct cmd cmds[] = {
    {"hello", 0}, {"probe", 0}, {"exec", 1}, {"fork", 2}, {"exit", 1}, {"mmap", 4}, {"shm_mmap", 5}, {"hugetlb_mmap", 5},
    {"munmap", 3}, {"madvise", 4}, {"fault", 3}, {"mremap", 5}, {"figures", 3}, {"pid", 1}, {"shm_reset", 0},
    {"figall", 2}, {"quit", 0}, {"killall", 0}, {"hugepages", 0}, {"set_hugepages", 1},
};

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"

/* vm.nr_hugepages, after writing n to it when set (the kernel may give fewer pages than asked) */
static int hugepages(int set, uint64_t n)
{
    if (set) {
        char b[32];
        int fd = open(NR_HUGEPAGES, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return out("e set_hugepages: %s: %s", NR_HUGEPAGES, strerror(errno));
        int len = snprintf(b, sizeof b, "%llu", (unsigned long long)n);
        ssize_t w = write(fd, b, (size_t)len);
        int e = errno;
        close(fd);
        if (w != len)
            return out("e set_hugepages: %s: %s", NR_HUGEPAGES, w < 0 ? strerror(e) : "short write");
    }
    return out("ok %d", sysfs_word(NR_HUGEPAGES, NULL, 0));
}

static int handle(char *l)
{
    char *tok[8];
    int nt = 0;
    for (char *t = strtok(l, " \t\r"); t; t = strtok(NULL, " \t\r"))
        if (nt < 8)
            tok[nt++] = t;
        else
            return out("e too many arguments");
    if (!nt)
        return out("e empty request");
    const struct cmd *c = NULL;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(tok[0], cmds[i].name))
            c = &cmds[i];
    if (!c)
        return out("e unknown request %.64s", tok[0]);
    if (nt - 1 != c->nargs)
        return out("e %s takes %d arguments, got %d", c->name, c->nargs, nt - 1);
    uint64_t a[6] = {0};
    for (int i = 1; i < nt; i++)
        if (parse_u64(tok[i], &a[i - 1]))
            return out("e %s: bad integer %.64s", c->name, tok[i]);

    if (!strcmp(c->name, "hello")) {
        struct utsname u;
        if (uname(&u))
            memset(&u, 0, sizeof u);
        return out("ok %ld %llu %d %lld method=%s va_bits=%d release=%s machine=%s guest=%d hugetlb_files=%d", page_size,
                   (unsigned long long)pmd_size, la57, baseline, method_names[method], va_bits,
                   u.release[0] ? u.release : "?", u.machine[0] ? u.machine : "?", guest, hugetlb_files);
    }
    if (!strcmp(c->name, "quit"))
        shutdown_all();
    if (!strcmp(c->name, "figall"))
        return figall(a[0], a[1]);
    if (!strcmp(c->name, "hugepages") || !strcmp(c->name, "set_hugepages"))
        return hugepages(c->nargs, a[0]);
    if (!strcmp(c->name, "killall")) {
        for (int s = 0; s < NPROC; s++)
            kill_slot(s);
        return out("r 0");
    }
    if (!strcmp(c->name, "shm_reset")) {
        /* every object empty again (a trace starts with no page cache): drop and re-extend the files */
        for (int i = 0; i < NOBJ; i++)
            if (ftruncate(memfd[i], 0) || ftruncate(memfd[i], (off_t)memfd_size))
                return out("e shm_reset: %s", strerror(errno));
        for (int i = 0; i < hugetlb_files; i++) /* their huge pages go back to the pool */
            if (ftruncate(hugefd[i], 0))
                return out("e shm_reset: hugetlbfs file: %s", strerror(errno));
        return out("r 0");
    }
    if (!strcmp(c->name, "probe")) {
        if (tmp_child(C_PROBE))
            return out("e probe failed");
        return out("%s", outbuf);
    }
    if (!strcmp(c->name, "figures") || !strcmp(c->name, "pid")) {
        if (a[0] >= NPROC)
            return out("e %s: pid %llu is not 0..%d", c->name, (unsigned long long)a[0], NPROC - 1);
        if (!procs[a[0]].used)
            return out("r %d", -ESRCH);
        if (!strcmp(c->name, "pid"))
            return out("ok %d", (int)procs[a[0]].ospid);
        long long r = ptf_figures(a[0], a[1], a[2]);
        return r == PTF_FAIL ? out("e %s", ptf_err) : out("%s", outbuf);
    }
    /* the trace's operations: ptfuzz_ops.h */
    long long r = ptf_host_op(c->name, a);
    return r == PTF_FAIL ? out("e %s", ptf_err) : out("r %lld", r);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "measure-pte-tables")) { /* exec_measure's program */
        page_size = sysconf(_SC_PAGESIZE);
#if defined(__s390x__)
        pmd_size = 1ULL << 20;
#else
        pmd_size = (uint64_t)page_size * ((uint64_t)page_size / 8);
#endif
        char b[32];
        int n = snprintf(b, sizeof b, "%lld\n", measure_pte_tables());
        return write_all(1, b, (size_t)n) ? 1 : 0;
    }
    if (getpid() == 1)
        ptf_guest_init();
    ptf_init();
    if (guest)
        out("ptfuzz-host ready");
    char *l;
    while ((l = next_line())) {
        handle(l);
        reap();
    }
    shutdown_all();
    return 0;
}
