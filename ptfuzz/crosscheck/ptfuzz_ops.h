/*
 * ptfuzz_ops.h: what each host operation of a trace does on a real kernel, shared by the crosscheck helper
 * (ptfuzz_host.c, which answers a line protocol) and the standalone reproducers `ptfuzz repro-c` writes (which
 * inline this file): one definition of exec, fork, exit, mmap, shm_mmap, munmap, madvise, fault and mremap, and of the
 * page-table figures measured after them. crosscheck --kvm's helper (ptfuzz_kvm.c) runs its processes with it
 * too, with ptfuzz_kvm_ops.h's VM operations on top.
 *
 * Each trace process (pid 0..63) is a real child process of the root; the root talks to it over an AF_UNIX
 * stream socket (a socket rather than a pipe so that a process that forks can hand the new child's channel to
 * the root with SCM_RIGHTS). The root's entry points:
 *
 *   ptf_init()                      start-up: shm objects, host geometry (detect), the baseline VmPTE
 *   ptf_host_op(name, args)         one operation with the trace's arguments (exec: the pid only):
 *                                   0 or -errno as the model writes results, or PTF_FAIL (ptf_err says why:
 *                                   an argument the program cannot honour, a process that died)
 *   ptf_figures(pid, lo, hi)        outbuf = "f VMPTE_MINUS_BASELINE N ADDR1 .. ADDRN" (PMD-mapped blocks)
 *   shutdown_all()                  every process killed and reaped, then exit
 *   ptf_guest_init()                as a QEMU guest's /init (pid 1), before ptf_init: /proc, /sys, /dev, the console
 *
 * An includer may define PTF_NAME (its name in fatal messages), WIN_LO/WIN_HI/WIN_TEXT (another address
 * window), PTF_CHILD_EXTRA (a function serving more request codes in the child, e.g. the KVM operations of
 * ptfuzz_kvm_ops.h) and PTF_CHILD_START (a function every process calls first, fresh or forked, before its
 * fds are closed: the KVM header drops the VMs a forked process inherited) before including it.
 *
 * Page-table bytes are VmPTE minus a baseline.  VmPTE also counts the tables of the program's own
 * mappings, so every process keeps its non-window part identical: no allocation after start-up
 * (static buffers only, no stdio), MADV_NOHUGEPAGE on the program's own mappings, and every page of
 * every readable mapping outside the window is pre-faulted when a process starts (fresh or forked),
 * because fork copies page tables only for some mappings and the rest would fill in later.
 */
#ifndef PTFUZZ_OPS_H
#define PTFUZZ_OPS_H
#ifndef PTF_NAME
#define PTF_NAME "ptfuzz-host"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* The build host's headers may be older than the kernel the helper runs on. */
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_memfd_create
#error "memfd_create is required"
#endif

/* PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h), defined here because the headers may lack it. */
struct ptf_page_region {
    uint64_t start, end, categories;
};
struct ptf_pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PTF_PAGEMAP_SCAN _IOWR('f', 16, struct ptf_pm_scan_arg)
#define PTF_PAGE_IS_PRESENT (1ULL << 3)
#define PTF_PAGE_IS_PFNZERO (1ULL << 5)
#define PTF_PAGE_IS_HUGE (1ULL << 6)

/* /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h) for the fallback. */
#define KPF_COMPOUND_HEAD 15
#define KPF_HUGE 17
#define KPF_THP 22
#define KPF_ZERO_PAGE 24

/* Every address-space change must lie in [WIN_LO, WIN_HI), away from the program's own mappings (a reproducer
 * may define another window, WIN_TEXT naming it, for a trace whose addresses lie elsewhere). */
#ifndef WIN_LO
#define WIN_LO (1ULL << 44)
#define WIN_HI (1ULL << 46)
#define WIN_TEXT "[2^44, 2^46)"
#endif
#define MAX_MAP (64ULL << 30) /* the largest single mmap accepted */
#define NPROC 64
#define TMP NPROC /* slot of the throwaway child used by hello's baseline and probe */
#define NOBJ 16
#define NHFILE 8 /* hugetlbfs files (memfd_create MFD_HUGETLB): hugetlb_mmap's 0..7 */
#define MAXB 65536 /* most PMD-mapped blocks one figures reply lists */
#define CHILD_TIMEOUT_MS 120000

enum { M_NONE, M_SCAN, M_KPF };
static const char *const method_names[] = {"none", "scan", "kpageflags"};

enum { C_MMAP = 1, C_SHM, C_MUNMAP, C_MADVISE, C_FAULT, C_FIGURES, C_FORK, C_VMPTE, C_PROBE, C_MREMAP, C_HMMAP };

struct req {
    uint32_t op, pad;
    uint64_t a[4];
};

struct proc {
    int used, sock, pidfd;
    pid_t ospid;
    unsigned gen; /* which process the slot holds: a pid may be reused, a generation is not */
};

#ifdef PTF_CHILD_EXTRA
/* more requests a process serves (the KVM operations header): 0 when it has replied */
static int PTF_CHILD_EXTRA(const struct req *r);
#endif
#ifdef PTF_CHILD_START
static void PTF_CHILD_START(void);
#endif

/* ---- state shared by root and children (children inherit it at fork) ---- */
static long page_size;
static uint64_t pmd_size;
static unsigned pmd_shift, pud_shift; /* log2 of PMD_SIZE and PUD_SIZE: the trace's hugetlb sizes (detect) */
static long long baseline;
static int method, va_bits;
__attribute__((unused)) static int la57; /* x86_64's 5-level paging */
static int memfd[NOBJ];
static uint64_t memfd_size;
static int hugefd[NHFILE]; /* right after memfd[] (one run of fds every child keeps) */
static int hugetlb_files;  /* NHFILE when they exist, 0 when the kernel has no hugetlbfs memfd */
static int hugetlb_errno;  /* why not */
static pid_t root_pid;
static int guest; /* pid 1 of a QEMU guest */

/* ---- child state ---- */
static int chan = -1, pagemap_fd = -1, kpf_fd = -1;
static int have_1g; /* a PUD-size hugetlb mapping was made: such blocks are PUD-, not PMD-mapped */
static sigjmp_buf fault_env;
static volatile sig_atomic_t in_fault;

/* ---- static buffers: no allocation after start-up keeps the helper's own tables constant ---- */
static struct proc procs[NPROC + 1];
static char outbuf[MAXB * 16 + 256];
static uint64_t blocks[MAXB];
static char iobuf[1 << 16];
static struct ptf_page_region regions[1024];
static uint64_t pmbuf[4096];
static uint64_t g1_lo[256], g1_hi[256];

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One output line (a reply, a reproducer's result) through write(2), no stdio: nothing allocates after start-up. When
 * the reader is gone the process exits with status gone_status (PR_SET_PDEATHSIG and EOF take any children along). */
static void ptf_vline(int gone_status, const char *fmt, va_list ap)
{
    static char b[8192];
    int n = vsnprintf(b, sizeof b - 1, fmt, ap);
    if (n > (int)sizeof b - 2)
        n = (int)sizeof b - 2;
    b[n++] = '\n';
    if (write_all(1, b, (size_t)n))
        _exit(gone_status);
}

static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

__attribute__((noreturn)) static void die(const char *msg)
{
    char b[512];
    int n = snprintf(b, sizeof b, PTF_NAME ": %s: %s\n", msg, strerror(errno));
    (void)!write(2, b, (size_t)n);
    _exit(3);
}

/* ------------------------------------------------------------------------------------------ */
/* figures                                                                                     */

static long long read_vmpte(void)
{
    static char buf[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    char *p = strstr(buf, "\nVmPTE:");
    if (!p)
        return -1;
    return strtoll(p + 7, NULL, 10) * 1024; /* reported in kB */
}

static int add_block(int *n, uint64_t b)
{
    if (*n && blocks[*n - 1] >= b)
        return 0; /* regions arrive in ascending order; a block may span two regions */
    if (*n >= MAXB)
        return -1;
    blocks[(*n)++] = b;
    return 0;
}

/* Blocks with PAGE_IS_HUGE|PAGE_IS_PRESENT: PMD-mapped THPs (and the huge zero page) and hugetlb. */
static int scan_blocks(uint64_t lo, uint64_t hi, int *n)
{
    struct ptf_pm_scan_arg a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.start = lo;
    a.end = hi;
    a.vec = (uint64_t)(uintptr_t)regions;
    a.vec_len = sizeof regions / sizeof regions[0];
    a.category_mask = PTF_PAGE_IS_PRESENT | PTF_PAGE_IS_HUGE;
    a.return_mask = PTF_PAGE_IS_PRESENT | PTF_PAGE_IS_HUGE;
    while (a.start < hi) {
        int r = ioctl(pagemap_fd, PTF_PAGEMAP_SCAN, &a);
        if (r < 0)
            return -errno;
        for (int i = 0; i < r; i++)
            for (uint64_t b = regions[i].start & ~(pmd_size - 1); b < regions[i].end; b += pmd_size)
                if (add_block(n, b))
                    return -E2BIG;
        if (a.walk_end <= a.start || a.walk_end >= hi)
            break;
        a.start = a.walk_end;
    }
    return 0;
}

static int kpf_flags(uint64_t pfn, uint64_t *fl)
{
    return pread(kpf_fd, fl, 8, (off_t)(pfn * 8)) == 8 ? 0 : -1;
}

/* Fallback without PAGEMAP_SCAN (root only): a block counts as PMD-mapped when its first page is
 * the head of a THP (or a hugetlb page or the huge zero page) and all its pages are present with
 * consecutive PFNs.  A fully PTE-mapped THP looks the same here; PAGEMAP_SCAN has no such blind spot. */
/* The VMAs of [kpf_lo, kpf_hi) from /proc/self/smaps, each with the bytes it maps by PMD leaves
 * (AnonHugePages + ShmemPmdMapped + FilePmdMapped; the huge zero page is in none of them). */
static uint64_t kpf_lo, kpf_hi;
static struct { uint64_t a, b, pmd_kb; } kpf_vma[256];
static int kpf_nvma;

static void kpf_read_smaps(void)
{
    int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC), cur = -1;
    kpf_nvma = 0;
    if (fd < 0)
        return;
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, iobuf + len, sizeof iobuf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        iobuf[len] = 0;
        char *p = iobuf, *nl;
        while ((nl = memchr(p, '\n', (size_t)(iobuf + len - p)))) {
            *nl = 0;
            unsigned long long a, b, kb;
            char key[32];
            if (sscanf(p, "%llx-%llx ", &a, &b) == 2) {
                cur = -1;
                if (b > kpf_lo && a < kpf_hi && kpf_nvma < 256) {
                    cur = kpf_nvma++;
                    kpf_vma[cur].a = a, kpf_vma[cur].b = b, kpf_vma[cur].pmd_kb = 0;
                }
            } else if (cur >= 0 && sscanf(p, "%31[A-Za-z]: %llu kB", key, &kb) == 2 &&
                       (!strcmp(key, "AnonHugePages") || !strcmp(key, "ShmemPmdMapped") || !strcmp(key, "FilePmdMapped"))) {
                kpf_vma[cur].pmd_kb += kb;
            }
            p = nl + 1;
        }
        len = (size_t)(iobuf + len - p);
        memmove(iobuf, p, len);
    }
    close(fd);
}

/* 0: not PMD-mapped by its looks; 1: a THP head with its 512 pages at consecutive PFNs; 2: the huge
 * zero page or a hugetlb page, which nothing maps by PTEs like that */
static int kpf_block(uint64_t b, uint64_t per)
{
    uint64_t e, fl;
    if (pread(pagemap_fd, &e, 8, (off_t)(b / (uint64_t)page_size * 8)) != 8)
        return -EIO;
    uint64_t pfn = e & ((1ULL << 55) - 1);
    if (!(e >> 63) || !pfn || pfn % per || kpf_flags(pfn, &fl))
        return 0;
    int zero = (fl >> KPF_ZERO_PAGE) & 1;
    int thp = ((fl >> KPF_THP) & 1) && (((fl >> KPF_COMPOUND_HEAD) & 1) || zero);
    if (!thp && !((fl >> KPF_HUGE) & 1))
        return 0;
    if (pread(pagemap_fd, pmbuf, per * 8, (off_t)(b / (uint64_t)page_size * 8)) != (ssize_t)(per * 8))
        return -EIO;
    for (uint64_t i = 0; i < per; i++)
        if (!(pmbuf[i] >> 63) || (pmbuf[i] & ((1ULL << 55) - 1)) != pfn + i)
            return 0;
    return zero || !thp ? 2 : 1;
}

/* Fallback without PAGEMAP_SCAN (root only; Linux before 6.7): a block counts as PMD-mapped when it lies
 * inside one VMA and its first page is the head of a THP (or a hugetlb page or the huge zero page) with
 * all its pages present at consecutive PFNs.  A fully PTE-mapped THP looks the same (after a split at a
 * VMA boundary that a later merge removed), so a VMA whose smaps shows no PMD-mapped bytes has none;
 * one that shows fewer than it has such blocks cannot say which: every candidate is reported.  Only
 * blocks inside VMAs are looked at: a syscall per block of an empty window costs tens of milliseconds
 * per figures under QEMU's TCG. */
static int kpf_blocks(uint64_t lo, uint64_t hi, int *n)
{
    uint64_t per = pmd_size / (uint64_t)page_size;
    static uint64_t cand[MAXB];
    static int kind[MAXB];
    if (per > sizeof pmbuf / 8)
        return -EINVAL;
    kpf_lo = lo, kpf_hi = hi;
    kpf_read_smaps();
    for (int v = 0; v < kpf_nvma; v++) {
        uint64_t from = (kpf_vma[v].a + pmd_size - 1) & ~(pmd_size - 1), to = kpf_vma[v].b < hi ? kpf_vma[v].b : hi;
        if (from < lo)
            from = lo;
        int nc = 0, nthp = 0;
        for (uint64_t b = from; b + pmd_size <= to && nc < MAXB; b += pmd_size) {
            int k = kpf_block(b, per);
            if (k < 0)
                return k;
            if (k) {
                cand[nc] = b;
                kind[nc++] = k;
                nthp += k == 1;
            }
        }
        for (int i = 0; i < nc; i++)
            if ((kind[i] == 2 || kpf_vma[v].pmd_kb) && add_block(n, cand[i]))
                return -E2BIG;
        (void)nthp;
    }
    return 0;
}

/* PUD-size hugetlb VMAs, from smaps, so that their blocks are not reported as PMD-mapped. */
static int find_1g_vmas(void)
{
    int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC), ng = 0;
    if (fd < 0)
        return 0;
    size_t len = 0;
    uint64_t cur_lo = 0, cur_hi = 0;
    for (;;) {
        ssize_t r = read(fd, iobuf + len, sizeof iobuf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        iobuf[len] = 0;
        char *p = iobuf, *nl;
        while ((nl = memchr(p, '\n', (size_t)(iobuf + len - p)))) {
            *nl = 0;
            unsigned long long a, b, kb;
            if (sscanf(p, "%llx-%llx ", &a, &b) == 2)
                cur_lo = a, cur_hi = b;
            else if (sscanf(p, "KernelPageSize: %llu kB", &kb) == 1 && kb << 10 == 1ULL << pud_shift && ng < 256)
                g1_lo[ng] = cur_lo, g1_hi[ng++] = cur_hi;
            p = nl + 1;
        }
        len = (size_t)(iobuf + len - p);
        memmove(iobuf, p, len);
    }
    close(fd);
    return ng;
}

static void do_figures(uint64_t lo, uint64_t hi)
{
    long long vm = read_vmpte();
    int n = 0, r;
    lo &= ~(pmd_size - 1);
    hi = (hi + pmd_size - 1) & ~(pmd_size - 1);
    if (vm < 0) {
        snprintf(outbuf, sizeof outbuf, "e cannot read VmPTE\n");
        goto out;
    }
    if (method == M_SCAN)
        r = scan_blocks(lo, hi, &n);
    else if (method == M_KPF)
        r = kpf_blocks(lo, hi, &n);
    else
        r = -ENOSYS;
    if (r) {
        snprintf(outbuf, sizeof outbuf, "e PMD-mapped blocks: %s\n", r == -ENOSYS ? "no method on this host" : strerror(-r));
        goto out;
    }
    if (have_1g) {
        int ng = find_1g_vmas(), k = 0;
        for (int i = 0; i < n; i++) {
            int drop = 0;
            for (int g = 0; g < ng; g++)
                drop |= blocks[i] >= g1_lo[g] && blocks[i] < g1_hi[g];
            if (!drop)
                blocks[k++] = blocks[i];
        }
        n = k;
    }
    size_t o = (size_t)snprintf(outbuf, sizeof outbuf, "f %lld %d", vm - baseline, n);
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(outbuf + o, sizeof outbuf - o, " %llu", (unsigned long long)blocks[i]);
    outbuf[o++] = '\n';
    outbuf[o] = 0;
out:
    if (write_all(chan, outbuf, strlen(outbuf)))
        _exit(0);
}

/* ------------------------------------------------------------------------------------------ */
/* child process                                                                               */

static void fault_handler(int sig)
{
    if (!in_fault) {
        signal(sig, SIG_DFL); /* a bug in the helper itself: die from the re-raised fault */
        return;
    }
    in_fault = 0;
    siglongjmp(fault_env, 1);
}

/* A load or a store with SIGSEGV/SIGBUS turned into -EFAULT: one byte (a store writes 1), or 32 bits at addr & ~3
 * for a store of a nonzero stamp or a load into val (the KVM operations: what a guest reads then names the host
 * operation that wrote it). */
static int touch(uint64_t addr, int write, uint32_t stamp, uint32_t *val)
{
    volatile uint32_t *w = (volatile uint32_t *)(uintptr_t)(addr & ~3ULL);
    volatile char *b = (volatile char *)(uintptr_t)addr;
    if (sigsetjmp(fault_env, 1))
        return -EFAULT;
    in_fault = 1;
    if (write && stamp)
        *w = stamp;
    else if (write)
        *b = 1;
    else if (val)
        *val = *w;
    else
        (void)*b;
    in_fault = 0;
    return 0;
}

static int overlaps_window(uint64_t a, uint64_t b)
{
    return a < WIN_HI && b > WIN_LO;
}

/* Calls fn(start, end, perms, name) for every mapping of /proc/self/maps. */
static void for_each_mapping(void (*fn)(uint64_t, uint64_t, const char *, const char *))
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("open /proc/self/maps");
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, iobuf + len, sizeof iobuf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        iobuf[len] = 0;
        char *p = iobuf, *nl;
        while ((nl = memchr(p, '\n', (size_t)(iobuf + len - p)))) {
            *nl = 0;
            unsigned long long a, b;
            char perms[8] = "";
            int name_at = 0;
            if (sscanf(p, "%llx-%llx %7s %*s %*s %*s %n", &a, &b, perms, &name_at) >= 3)
                fn(a, b, perms, name_at ? p + name_at : "");
            p = nl + 1;
        }
        len = (size_t)(iobuf + len - p);
        memmove(iobuf, p, len);
    }
    close(fd);
}

static int special(const char *name)
{
    return !strcmp(name, "[vvar]") || !strcmp(name, "[vvar_vclock]") || !strcmp(name, "[vsyscall]");
}

static volatile uint64_t pf_lo, pf_hi;

static void prefault_one(uint64_t a, uint64_t b, const char *perms, const char *name)
{
    if (perms[0] != 'r' || special(name) || overlaps_window(a, b))
        return;
    /* one sigsetjmp per mapping: a fault (SIGBUS past the end of a file) skips the rest of it;
     * the bounds live in statics because locals may not survive the siglongjmp */
    pf_lo = a;
    pf_hi = b;
    if (sigsetjmp(fault_env, 1))
        return;
    in_fault = 1;
    for (; pf_lo < pf_hi; pf_lo += (uint64_t)page_size)
        (void)*(volatile char *)(uintptr_t)pf_lo;
    in_fault = 0;
}

static void nohuge_one(uint64_t a, uint64_t b, const char *perms, const char *name)
{
    (void)perms;
    if (!special(name) && !overlaps_window(a, b))
        madvise((void *)(uintptr_t)a, b - a, MADV_NOHUGEPAGE); /* errors (special mappings) do not matter */
}

static void window_clash(uint64_t a, uint64_t b, const char *perms, const char *name)
{
    (void)perms;
    (void)name;
    if (overlaps_window(a, b)) {
        errno = EEXIST;
        die("the program's own mappings overlap the window " WIN_TEXT);
    }
}

static void close_others(int keep)
{
    /* keep: the channel and the shared memfds (created first, so the fds below them are 0..2) */
    int lo_keep = memfd[0], hi_keep = hugetlb_files ? hugefd[NHFILE - 1] : memfd[NOBJ - 1];
    for (int fd = 0; fd < lo_keep; fd++)
        if (fd != keep)
            close(fd);
    if (keep > hi_keep + 1 && syscall(SYS_close_range, hi_keep + 1, keep - 1, 0) && errno == ENOSYS)
        for (int fd = hi_keep + 1; fd < keep; fd++)
            close(fd);
    if (syscall(SYS_close_range, (keep > hi_keep ? keep : hi_keep) + 1, ~0U, 0) && errno == ENOSYS)
        for (int fd = (keep > hi_keep ? keep : hi_keep) + 1; fd < 4096; fd++)
            close(fd);
}

/* Start of every process's life, fresh or forked: own channel only, then a constant set of tables. */
static void child_init(int ch)
{
#ifdef PTF_CHILD_START
    PTF_CHILD_START();
#endif
    close_others(ch);
    int nul = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; fd++)
        if (fd != ch && fd != nul)
            dup2(nul, fd); /* nothing of the client's stdio stays open in the children */
    if (nul > 2 && nul != ch)
        close(nul);
    chan = ch;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fault_handler;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    signal(SIGCHLD, SIG_IGN); /* processes forked by this one are reaped by the kernel */
    signal(SIGPIPE, SIG_IGN);
    pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC); /* bound to this mm at open */
    if (method == M_KPF)
        kpf_fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
    for_each_mapping(prefault_one);
    if (write_all(chan, "r 0\n", 4))
        _exit(0);
}

static void reply_r(long long v)
{
    char b[64];
    int n = snprintf(b, sizeof b, "r %lld\n", v);
    if (write_all(chan, b, (size_t)n))
        _exit(0);
}

static int err(long r)
{
    return r < 0 ? -errno : 0;
}

static int do_mmap(uint64_t addr, uint64_t len, uint64_t flags)
{
    /* the trace's meaning (docs/trace-format.md): MAP_HUGETLB with the size log of PMD_SIZE (bit1) and of PUD_SIZE
     * (bit2), both bits the two logs ORed; on x86_64 MAP_HUGE_2MB and MAP_HUGE_1GB */
    int f = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
    if (flags & 2)
        f |= MAP_HUGETLB | (int)(pmd_shift << MAP_HUGE_SHIFT);
    if (flags & 4)
        f |= MAP_HUGETLB | (int)(pud_shift << MAP_HUGE_SHIFT);
    void *p = mmap((void *)(uintptr_t)addr, len, PROT_READ | PROT_WRITE, f, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    if ((flags & 6) == 4 && pud_shift != pmd_shift)
        have_1g = 1;
    if (flags & 1)
        return err(madvise(p, len, MADV_HUGEPAGE));
    return 0;
}

/* A reply of n bytes to the root with up to two fds passed along (SCM_RIGHTS); the process leaves when the root
 * is gone. */
/* mremap(old_addr, old_len, new_len, flags, new_addr) as the trace means it (docs/trace-format.md): new_addr ==
 * old_addr resizes in place (flags 0), any other new_addr moves there (MREMAP_MAYMOVE | MREMAP_FIXED). 0 or -errno. */
static int do_mremap(uint64_t old_addr, uint64_t old_len, uint64_t new_addr, uint64_t new_len)
{
    int flags = new_addr == old_addr ? 0 : MREMAP_MAYMOVE | MREMAP_FIXED;
    void *p = (void *)syscall(SYS_mremap, (unsigned long)old_addr, (unsigned long)old_len, (unsigned long)new_len,
                              (unsigned long)flags, (unsigned long)new_addr);
    return p == MAP_FAILED ? -errno : 0;
}

static void send_fds(const void *buf, size_t n, const int *fds, int nfds)
{
    struct iovec iov = {(void *)buf, n};
    struct msghdr mh;
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(2 * sizeof(int))];
    } cb;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds) {
        memset(&cb, 0, sizeof cb);
        mh.msg_control = cb.b;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    ssize_t w;
    do
        w = sendmsg(chan, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)n)
        _exit(0);
}

/* Returns the new process's channel in the new process, -1 in the parent (which has replied).
 * The new process goes back to the same request loop rather than starting a nested one: a chain
 * of forks must not deepen the stack (a grown stack mapping would change the baseline). */
static int do_fork(void)
{
    int sv[2];
    struct {
        int32_t res, pid;
    } msg = {0, 0};
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
        msg.res = -errno;
    } else {
        pid_t pid = fork();
        if (pid == 0) {
            /* No PR_SET_PDEATHSIG here: the real child outlives its parent's exit.  It leaves when
             * its channel reaches EOF, i.e. when the root is gone. */
            close(sv[0]);
            return sv[1];
        }
        close(sv[1]);
        if (pid < 0) {
            msg.res = -errno;
            close(sv[0]);
        } else {
            msg.pid = pid;
            send_fds(&msg, sizeof msg, &sv[0], 1);
            close(sv[0]);
            return -1;
        }
    }
    send_fds(&msg, sizeof msg, NULL, 0);
    return -1;
}

static void write_file(const char *path, const char *v)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, v, strlen(v));
        close(fd);
    }
}

/* A /proc/meminfo field in kB, or -1. */
static long long meminfo_kb(const char *key)
{
    static char buf[8192];
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char want[64];
    snprintf(want, sizeof want, "\n%s:", key);
    char *p = strstr(buf, want);
    return p ? strtoll(p + strlen(want), NULL, 10) : -1;
}

/* Page-table memory of the whole system (PageTables in /proc/meminfo), exact after vm.stat_refresh
 * (root only; elsewhere per-cpu counter drift stays in it). */
static long long pagetables_kb(void)
{
    write_file("/proc/sys/vm/stat_refresh", "1");
    return meminfo_kb("PageTables");
}

/* ---- probes: run in a throwaway child, in the window (nothing else lives there) ---- */

/* The probes' addresses: 4 GiB apart, or one PUD range (what a PMD table maps times its entries) apart where that is
 * larger, 64 GiB with arm64's 16K pages: each probe has a PMD table of its own, so "the caller has no PMD table"
 * holds there too (probe_addr(8) of collapse_pmd_alloc shared one with probe_addr(9) on a 16K kernel) */
static uint64_t probe_addr(int i)
{
    uint64_t pud = pmd_size * ((uint64_t)page_size / 8), step = 4ULL << 30;
    if (pud > step && pud <= (64ULL << 30))
        step = pud;
    return 0x300000000000ULL + (uint64_t)i * step;
}

static void *probe_map(int i, int advice)
{
    void *p = mmap((void *)(uintptr_t)probe_addr(i), pmd_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (advice >= 0)
        madvise(p, pmd_size, advice);
    return p;
}

/* Categories of the first page at p (PAGEMAP_SCAN), or -1. */
static long long scan_cats(void *p)
{
    struct ptf_pm_scan_arg a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.start = (uint64_t)(uintptr_t)p;
    a.end = a.start + (uint64_t)page_size;
    a.vec = (uint64_t)(uintptr_t)regions;
    a.vec_len = 1;
    a.return_mask = PTF_PAGE_IS_PRESENT | PTF_PAGE_IS_HUGE | PTF_PAGE_IS_PFNZERO;
    int r = ioctl(pagemap_fd, PTF_PAGEMAP_SCAN, &a);
    if (r < 0)
        return -1;
    return r ? (long long)regions[0].categories : 0;
}

static uint64_t pm_pfn(void *p)
{
    uint64_t e = 0;
    if (pread(pagemap_fd, &e, 8, (off_t)((uintptr_t)p / (uintptr_t)page_size * 8)) != 8 || !(e >> 63))
        return 0;
    return e & ((1ULL << 55) - 1);
}

static int is_pmd_mapped(void *p)
{
    int n = 0;
    uint64_t b = (uint64_t)(uintptr_t)p;
    int r = method == M_SCAN ? scan_blocks(b, b + pmd_size, &n) : method == M_KPF ? kpf_blocks(b, b + pmd_size, &n) : -1;
    return r ? -1 : n > 0;
}

static int sysfs_word(const char *path, const char *const *words, int nwords)
{
    char b[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n <= 0)
        return -1;
    b[n] = 0;
    char *s = strchr(b, '[');
    if (!s) /* a plain number */
        return atoi(b);
    for (int i = 0; i < nwords; i++)
        if (!strncmp(s + 1, words[i], strlen(words[i])) && s[1 + strlen(words[i])] == ']')
            return i;
    return -1;
}

static uint64_t vmas_lo, vmas_hi;
static int vmas_seen;

static void count_vma(uint64_t a, uint64_t b, const char *perms, const char *name)
{
    (void)perms, (void)name;
    vmas_seen += a < vmas_hi && b > vmas_lo;
}

/* How many VMAs /proc/self/maps shows in [lo, hi): what tells a merge from none. */
static int vmas_in(uint64_t lo, uint64_t hi)
{
    vmas_lo = lo, vmas_hi = hi, vmas_seen = 0;
    for_each_mapping(count_vma);
    return vmas_seen;
}

/* PageTables bytes per PTE table in this process: 128 tables, one page written in each of 128 PMD ranges. */
static long long measure_pte_tables(void)
{
    char *p = mmap((void *)(uintptr_t)probe_addr(10), 128 * pmd_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    madvise(p, 128 * pmd_size, MADV_NOHUGEPAGE);
    long long k0 = pagetables_kb();
    for (int i = 0; i < 128; i++)
        p[(uint64_t)i * pmd_size] = 1;
    long long k1 = pagetables_kb();
    munmap(p, 128 * pmd_size);
    return k0 >= 0 && k1 >= 0 ? (k1 - k0) * 1024 / 128 : -1;
}

/* measure_pte_tables in a fresh exec of path (`path measure-pte-tables`): what an exec'd program gets,
 * e.g. one whose ELF header asks for PGSTEs (PT_S390_PGSTE, `ld --s390-pgste`); -1 without it. */
static long long exec_measure(const char *path)
{
    int fd[2];
    if (access(path, X_OK) || pipe(fd))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        execl(path, path, "measure-pte-tables", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char b[64];
    ssize_t n = 0, r;
    while (n < (ssize_t)sizeof b - 1 && (r = read(fd[0], b + n, sizeof b - 1 - (size_t)n)) > 0)
        n += r;
    close(fd[0]);
    b[n > 0 ? n : 0] = 0;
    return pid > 0 && n > 0 ? strtoll(b, NULL, 10) : -1;
}

static void do_probe(void)
{
    static const char *const thp_words[] = {"never", "madvise", "always"};
    int pt_reclaim = -1, zero_page = -1, thp_read_pmd = -1, huge_zero = -1, thp_write_pmd = -1;
    long long thp_write_bytes = -1, pte_write_bytes = -1, munmap_bytes = -1;
    int collapse = -1, collapse_pmd = -1, huge_zero_wp_pmd = -1, collapse_readonly = -1, merge_unfaulted = -1;
    int file_pmd_nohuge = -1, collapse_pmd_alloc = -1;
    char *p;

    /* pt_reclaim: does MADV_DONTNEED of a whole PTE table's range free the table? */
    if ((p = probe_map(0, MADV_NOHUGEPAGE))) {
        long long v0 = read_vmpte();
        for (uint64_t o = 0; o < pmd_size; o += (uint64_t)page_size)
            p[o] = 1;
        long long v1 = read_vmpte();
        madvise(p, pmd_size, MADV_DONTNEED);
        long long v2 = read_vmpte();
        /* one PTE table as VmPTE counts it: PTRS_PER_PTE entries (2K on s390, a page elsewhere) */
        pt_reclaim = v1 - v2 >= (long long)(pmd_size / (uint64_t)page_size * 8);
        pte_write_bytes = v1 - v0; /* tables for the first page written in an empty PGD slot */
        munmap(p, pmd_size);
        munmap_bytes = read_vmpte() - v0; /* 0 when munmap frees every level */
    }
    /* zero_page: does a read fault of anonymous memory map the shared zero page? */
    if ((p = probe_map(1, MADV_NOHUGEPAGE))) {
        (void)*(volatile char *)p;
        (void)*(volatile char *)(p + page_size);
        long long c0 = scan_cats(p), c1 = scan_cats(p + page_size);
        if (c0 >= 0 && c1 >= 0)
            zero_page = (c0 & PTF_PAGE_IS_PFNZERO) && (c1 & PTF_PAGE_IS_PFNZERO);
        else if (pm_pfn(p))
            zero_page = pm_pfn(p) == pm_pfn(p + page_size);
        munmap(p, pmd_size);
    }
    /* THP read fault: PMD-mapped (the huge zero page)? */
    if ((p = probe_map(2, MADV_HUGEPAGE))) {
        (void)*(volatile char *)p;
        thp_read_pmd = is_pmd_mapped(p);
        long long c = scan_cats(p);
        huge_zero = c < 0 ? -1 : (c & PTF_PAGE_IS_HUGE) && (c & PTF_PAGE_IS_PFNZERO);
        munmap(p, pmd_size);
    }
    /* write fault on the huge zero page: a fresh THP in its place (PMD-mapped), or a split to PTEs? */
    if ((p = probe_map(5, MADV_HUGEPAGE))) {
        (void)*(volatile char *)p;
        if (is_pmd_mapped(p) == 1) {
            p[0] = 1;
            huge_zero_wp_pmd = is_pmd_mapped(p);
        }
        munmap(p, pmd_size);
    }
    /* THP write fault: PMD-mapped, and the table bytes (a PTE table is deposited with it) */
    if ((p = probe_map(3, MADV_HUGEPAGE))) {
        long long v0 = read_vmpte();
        p[0] = 1;
        thp_write_bytes = read_vmpte() - v0;
        thp_write_pmd = is_pmd_mapped(p);
        munmap(p, pmd_size);
    }
    /* MADV_COLLAPSE of a region with one page written, without MADV_HUGEPAGE */
    if ((p = probe_map(4, -1))) {
        p[0] = 1;
        collapse = madvise(p, pmd_size, MADV_COLLAPSE) ? -errno : 0;
        collapse_pmd = is_pmd_mapped(p);
        munmap(p, pmd_size);
    }
    /* collapse_readonly: a block whose PTEs are only none or the zero page (the VMA has an anon_vma
     * from an earlier write): v6.6 fails it (SCAN_PAGE_RO, -EINVAL), 6.18 collapses it */
    if ((p = probe_map(6, MADV_NOHUGEPAGE))) {
        /* the write while NOHUGEPAGE: under HUGEPAGE it would fault a THP, whose 511 writable PTEs left
         * by the DONTNEED would collapse on any release */
        p[0] = 1;
        madvise(p, (size_t)page_size, MADV_DONTNEED);
        (void)*(volatile char *)(p + page_size);
        madvise(p, pmd_size, MADV_HUGEPAGE);
        collapse_readonly = madvise(p, pmd_size, MADV_COLLAPSE) == 0 && is_pmd_mapped(p) == 1;
        munmap(p, pmd_size);
    }
    /* merge_unfaulted: a faulted VMA given the flags of its never-faulted neighbour: v6.6's
     * is_mergeable_anon_vma looks at the neighbour's (empty) anon_vma_chain and refuses; 6.16 merges */
    if ((p = probe_map(7, -1))) {
        uint64_t a = (uint64_t)(uintptr_t)p;
        madvise(p, (size_t)page_size, MADV_NOHUGEPAGE);
        p[page_size] = 1;
        madvise(p + page_size, (size_t)page_size, MADV_NOHUGEPAGE);
        merge_unfaulted = vmas_in(a, a + 2 * (uint64_t)page_size) == 1;
        munmap(p, pmd_size);
    }
    /* collapse_pmd_alloc: MADV_COLLAPSE of shmem where the caller has no PMD table (never faulted):
     * v6.6 fails the block (SCAN_PMD_NULL, -EINVAL), 6.18 maps the folio. Object NOBJ-1 at offset 0. */
    p = mmap((void *)(uintptr_t)probe_addr(8), pmd_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
             memfd[NOBJ - 1], 0);
    char *q = mmap((void *)(uintptr_t)probe_addr(9), pmd_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                   memfd[NOBJ - 1], 0);
    if (p != MAP_FAILED && q != MAP_FAILED) {
        q[0] = 1; /* a page in the cache, written through another mapping */
        munmap(q, pmd_size);
        collapse_pmd_alloc = madvise(p, pmd_size, MADV_COLLAPSE) == 0 && is_pmd_mapped(p) == 1;
        /* file_pmd_nohuge: the now PMD-size folio faulted in a NOHUGEPAGE mapping: v6.6 maps a PMD
         * leaf, 6.12+ (2b0f922323cc) maps PTEs */
        q = mmap((void *)(uintptr_t)probe_addr(9), pmd_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                 memfd[NOBJ - 1], 0);
        if (q != MAP_FAILED) {
            madvise(q, pmd_size, MADV_NOHUGEPAGE);
            (void)*(volatile char *)q;
            int m = is_pmd_mapped(q);
            file_pmd_nohuge = m < 0 ? -1 : !m;
            munmap(q, pmd_size);
        }
        munmap(p, pmd_size);
    }
    if (ftruncate(memfd[NOBJ - 1], 0) || ftruncate(memfd[NOBJ - 1], (off_t)memfd_size))
        file_pmd_nohuge = collapse_pmd_alloc = -1;
    /* pte_table_bytes: what one PTE table costs in PageTables (VmPTE counts PTRS_PER_PTE entries whatever
     * the allocation): 128 tables, one page written in each of 128 PMD ranges. s390 gives 2K fragments up
     * to 6.6 and a whole page from 6.7 (s390.pt_alloc); upper-level tables add a few hundred bytes. */
    long long pte_table_bytes = measure_pte_tables();
    /* the same in an exec'd program whose ELF asks for PGSTEs (a guest's /init-pgste, s390 only): up to 6.6
     * such an mm gets whole-page tables (4K: 2K of PTEs, 2K of PGSTEs) where others get 2K fragments */
    long long pgste_table_bytes = exec_measure("/init-pgste");
    int allocate_pgste = sysfs_word("/proc/sys/vm/allocate_pgste", NULL, 0); /* -1: no such sysctl (7.2) */
    int thp = sysfs_word("/sys/kernel/mm/transparent_hugepage/enabled", thp_words, 3);
    int mpn = sysfs_word("/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none", NULL, 0);
    int uzp = sysfs_word("/sys/kernel/mm/transparent_hugepage/use_zero_page", NULL, 0);
    /* 0 (heuristic): one private writable mapping larger than RAM + swap fails with ENOMEM */
    int ovc = sysfs_word("/proc/sys/vm/overcommit_memory", NULL, 0);
    int n = snprintf(outbuf, sizeof outbuf,
                     "ok pt_reclaim=%d pagemap_scan=%d zero_page=%d thp_read_pmd=%d huge_zero_page=%d "
                     "huge_zero_wp_pmd=%d thp_write_pmd=%d thp_write_bytes=%lld pte_write_bytes=%lld munmap_bytes=%lld collapse=%d "
                     "collapse_pmd=%d collapse_readonly=%d merge_unfaulted=%d file_pmd_nohuge=%d collapse_pmd_alloc=%d "
                     "thp_enabled=%d use_zero_page=%d "
                     "max_ptes_none=%d overcommit_memory=%d pte_table_bytes=%lld pgste_table_bytes=%lld allocate_pgste=%d "
                     "guest=%d\n",
                     pt_reclaim, method == M_SCAN, zero_page, thp_read_pmd, huge_zero, huge_zero_wp_pmd, thp_write_pmd, thp_write_bytes,
                     pte_write_bytes, munmap_bytes, collapse, collapse_pmd, collapse_readonly, merge_unfaulted, file_pmd_nohuge,
                     collapse_pmd_alloc, thp, uzp, mpn,
                     ovc, pte_table_bytes, pgste_table_bytes, allocate_pgste, guest);
    if (write_all(chan, outbuf, (size_t)n))
        _exit(0);
}

static void child_loop(void)
{
    static const int advices[4] = {MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE};
    for (;;) {
        struct req r;
        if (read_full(chan, &r, sizeof r))
            _exit(0); /* EOF: the root is gone */
        void *addr = (void *)(uintptr_t)r.a[0];
        switch (r.op) {
        case C_MMAP:
            reply_r(do_mmap(r.a[0], r.a[1], r.a[2]));
            break;
        case C_SHM: {
            void *p = mmap(addr, r.a[1], PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd[r.a[2]],
                           (off_t)(r.a[3] * (uint64_t)page_size));
            reply_r(p == MAP_FAILED ? -errno : 0);
            break;
        }
        case C_HMMAP: { /* MAP_NORESERVE: nothing reserved at mmap (the model has no reservations), the faults
                         * take pages from the pool crosscheck set up (nr_hugepages) */
            void *p = mmap(addr, r.a[1], PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE,
                           hugefd[r.a[2]], (off_t)(r.a[3] * (uint64_t)page_size));
            reply_r(p == MAP_FAILED ? -errno : 0);
            break;
        }
        case C_MUNMAP:
            reply_r(err(munmap(addr, r.a[1])));
            break;
        case C_MADVISE:
            reply_r(err(madvise(addr, r.a[1], advices[r.a[2]])));
            break;
        case C_MREMAP: /* the trace's mremap: in place (flags 0) when new_addr == old_addr, else MAYMOVE|FIXED */
            reply_r(do_mremap(r.a[0], r.a[1], r.a[2], r.a[3]));
            break;
        case C_FAULT:
            reply_r(touch(r.a[0], (int)r.a[1], (uint32_t)r.a[2], NULL));
            break;
        case C_FIGURES:
            do_figures(r.a[0], r.a[1]);
            break;
        case C_FORK: {
            int nc = do_fork();
            if (nc >= 0)
                child_init(nc); /* closes the parent's channel with everything else */
            break;
        }
        case C_VMPTE:
            reply_r(read_vmpte());
            break;
        case C_PROBE:
            do_probe();
            break;
        default:
#ifdef PTF_CHILD_EXTRA
            if (!PTF_CHILD_EXTRA(&r))
                break;
#endif
            _exit(4);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* root                                                                                        */

/* A failure of the program itself (not an operation result): PTF_FAIL, with ptf_err saying why. */
#define PTF_FAIL LLONG_MIN
static char ptf_err[4096];

__attribute__((format(printf, 1, 2))) static long long ptf_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ptf_err, sizeof ptf_err, fmt, ap);
    va_end(ap);
    return PTF_FAIL;
}

/* Waits until fd is readable; 0, or -1 on timeout. */
static int wait_readable(int fd)
{
    struct pollfd pf = {fd, POLLIN, 0};
    int r;
    do
        r = poll(&pf, 1, CHILD_TIMEOUT_MS);
    while (r < 0 && errno == EINTR);
    return r > 0 ? 0 : -1;
}

static void reap(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

/* SIGKILL, then wait for the channel's EOF: the kernel closes files after it has torn down the mm,
 * so once EOF is seen the process's memory no longer shares anything (COW, THP) with the others.
 * Returns the wait status when the process was ours to reap, else -1. */
static int kill_slot(int s)
{
    struct proc *p = &procs[s];
    int st = -1;
    if (!p->used)
        return -1;
    /* through the pidfd, which cannot name a reused pid; kill() only where pidfds do not exist */
    if (p->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
    else
        kill(p->ospid, SIGKILL);
    for (;;) {
        if (wait_readable(p->sock))
            break;
        ssize_t r = read(p->sock, iobuf, sizeof iobuf);
        if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    close(p->sock);
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->used = 0;
    /* our child (spawned, or forked by a process that has exited since): reap it now; a process
     * forked by a live one is reaped by its parent (SIGCHLD ignored there): ECHILD here */
    if (waitpid(p->ospid, &st, 0) != p->ospid)
        st = -1;
    return st;
}

static long long lost(int s, const char *what)
{
    int st = kill_slot(s);
    if (st != -1 && WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
        return ptf_fail("process %d died during %s (signal %d)", s, what, WTERMSIG(st));
    return ptf_fail("process %d died during %s", s, what);
}

/* One recvmsg of up to n bytes from sock (EINTR retried), the fds passed along with them (SCM_RIGHTS) into
 * fds[*nfds], up to 2 (fds NULL: none wanted; the others are closed): what recvmsg returned. */
static ssize_t recv_fds(int sock, void *buf, size_t n, int *fds, int *nfds)
{
    struct iovec iov = {buf, n};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(2 * sizeof(int))];
    } cb;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cb.b;
    mh.msg_controllen = sizeof cb.b;
    ssize_t r;
    do
        r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return r;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (fds && *nfds < 2)
                    fds[(*nfds)++] = fd;
                else
                    close(fd);
            }
    return r;
}

/* Reads a child's one reply line into outbuf (NUL-terminated, no newline), and the fds passed with it into fds
 * (up to 2; *nfds counts them): 0, -1 EOF, -2 timeout. */
static int read_reply_fds(int s, int *fds, int *nfds)
{
    size_t n = 0;
    if (nfds)
        *nfds = 0;
    while (n < sizeof outbuf - 1) {
        if (wait_readable(procs[s].sock))
            return -2;
        ssize_t r = recv_fds(procs[s].sock, outbuf + n, sizeof outbuf - 1 - n, fds, nfds);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        if (outbuf[n - 1] == '\n') { /* one request, one line: nothing follows the newline */
            outbuf[n - 1] = 0;
            return 0;
        }
    }
    return -1;
}

static int read_reply(int s)
{
    return read_reply_fds(s, NULL, NULL);
}

/* The child's reply to a request (in outbuf, one line without its newline; fds as read_reply_fds): 0, or
 * PTF_FAIL when there is none. */
static long long relay_fds(int s, const char *what, int *fds, int *nfds)
{
    int r = read_reply_fds(s, fds, nfds);
    if (r == -2) {
        kill_slot(s);
        return ptf_fail("process %d timed out during %s", s, what);
    }
    if (r)
        return lost(s, what);
    return 0;
}

static long long relay(int s, const char *what)
{
    return relay_fds(s, what, NULL, NULL);
}

/* The result a child replied (`r RES`, fds as read_reply_fds): RES, or PTF_FAIL. */
static long long relay_result_fds(int s, const char *what, int *fds, int *nfds)
{
    long long r = relay_fds(s, what, fds, nfds);
    if (r)
        return r;
    char *end;
    if (strncmp(outbuf, "r ", 2))
        return ptf_fail("%s", outbuf[0] == 'e' && outbuf[1] == ' ' ? outbuf + 2 : outbuf);
    errno = 0;
    r = strtoll(outbuf + 2, &end, 10);
    if (errno || *end || r == PTF_FAIL)
        return ptf_fail("process %d: %s: malformed reply %.64s", s, what, outbuf);
    return r;
}

static long long relay_result(int s, const char *what)
{
    return relay_result_fds(s, what, NULL, NULL);
}

static int send_req(int s, uint32_t op, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
    struct req r = {op, 0, {a0, a1, a2, a3}};
    return send(procs[s].sock, &r, sizeof r, MSG_NOSIGNAL) == (ssize_t)sizeof r ? 0 : -1;
}

/* After a process announced itself ready: a pidfd, so that a later kill cannot hit a reused pid. */
static int adopt(int s, int sock, pid_t pid)
{
    static unsigned next_gen;
    procs[s] = (struct proc){1, sock, -1, pid, ++next_gen};
    if (read_reply(s) || strcmp(outbuf, "r 0")) {
        kill_slot(s);
        return -1;
    }
    procs[s].pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    return 0;
}

static int spawn(int s)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != root_pid)
            _exit(0); /* the root died before the line above */
        close(sv[0]);
        child_init(sv[1]);
        child_loop();
    }
    close(sv[1]);
    return adopt(s, sv[0], pid) ? -ECHILD : 0;
}

/* fork of process ps into slot cs: the result, or PTF_FAIL (ps died: lost's message). */
static long long root_fork(int ps, int cs)
{
    struct {
        int32_t res, pid;
    } msg;
    if (send_req(ps, C_FORK, 0, 0, 0, 0) || wait_readable(procs[ps].sock))
        return lost(ps, "fork");
    int fds[2] = {-1, -1}, nfd = 0;
    ssize_t r = recv_fds(procs[ps].sock, &msg, sizeof msg, fds, &nfd);
    if (r <= 0)
        return lost(ps, "fork");
    int fd = fds[0];
    if (nfd > 1)
        close(fds[1]);
    if (r < (ssize_t)sizeof msg && read_full(procs[ps].sock, (char *)&msg + r, sizeof msg - (size_t)r))
        return lost(ps, "fork");
    if (msg.res < 0 || fd < 0) {
        if (fd >= 0)
            close(fd);
        return msg.res < 0 ? msg.res : -EIO;
    }
    if (adopt(cs, fd, msg.pid))
        return ptf_fail("process %d: the forked process did not start", cs);
    return 0;
}

static int tmp_child(uint32_t op)
{
    if (spawn(TMP) || send_req(TMP, op, 0, 0, 0, 0) || read_reply(TMP)) {
        kill_slot(TMP);
        return -1;
    }
    kill_slot(TMP);
    return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    if (!*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    unsigned long long x = strtoull(s, &end, (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) ? 16 : 10);
    if (errno || *end)
        return -1;
    *v = x;
    return 0;
}

static int in_window(uint64_t addr, uint64_t len)
{
    return addr >= WIN_LO && addr < WIN_HI && len <= WIN_HI - addr;
}

static void shutdown_all(void)
{
    for (int s = 0; s <= TMP; s++) /* all at once, then wait for each */
        if (procs[s].used && procs[s].pidfd >= 0)
            syscall(SYS_pidfd_send_signal, procs[s].pidfd, SIGKILL, NULL, 0);
        else if (procs[s].used)
            kill(procs[s].ospid, SIGKILL);
    for (int s = 0; s <= TMP; s++)
        kill_slot(s);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    if (guest) {
        sync();
        reboot(RB_POWER_OFF);
    }
    _exit(0);
}


/* pid 1 of a QEMU guest booted with only an initramfs (the helpers, as `ptfuzz crosscheck --kernel`'s /init):
 * the file systems the helper reads, the console as a raw channel, and the THP settings of a distribution's
 * default (the model's assumptions). */
__attribute__((unused)) static void ptf_guest_init(void)
{
    guest = 1;
    mkdir("/proc", 0555);
    mkdir("/sys", 0555);
    mkdir("/dev", 0755);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd >= 0) {
        for (int i = 0; i < 3; i++)
            if (fd != i)
                dup2(fd, i);
        if (fd > 2)
            close(fd);
    }
    struct termios t;
    if (!tcgetattr(0, &t)) {
        cfmakeraw(&t);
        tcsetattr(0, TCSANOW, &t);
    }
    write_file("/sys/kernel/mm/transparent_hugepage/enabled", "madvise");
    write_file("/sys/kernel/mm/transparent_hugepage/defrag", "madvise");
    write_file("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "never");
    /* khugepaged would collapse MADV_HUGEPAGE ranges between two operations, which the model does not do */
    write_file("/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs", "4000000000");
    write_file("/sys/kernel/mm/transparent_hugepage/khugepaged/alloc_sleep_millisecs", "4000000000");
    write_file("/proc/sys/kernel/printk", "1 4 1 7"); /* only emergencies on the console from now on */
}

static void detect(void)
{
    page_size = sysconf(_SC_PAGESIZE);
#if defined(__s390x__)
    pmd_size = 1ULL << 20; /* a segment: 256 PTEs of 8 bytes per (2K) PTE table */
#else
    pmd_size = (uint64_t)page_size * ((uint64_t)page_size / 8);
#endif
    char b[64];
    int fd = open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, b, sizeof b - 1);
        close(fd);
        if (n > 0) {
            b[n] = 0;
            if (strtoull(b, NULL, 10))
                pmd_size = strtoull(b, NULL, 10);
        }
    }
    /* user address bits: the highest 2^n the kernel lets us map (needs an explicit hint above 47/48),
     * tried in a throwaway child: on s390 a hint above 4 TiB upgrades the ASCE (crst_table_upgrade) and
     * every process forked from the root would inherit the extra level */
    va_bits = 0;
    pid_t vp = fork();
    if (vp == 0) {
        int bits = 0;
        for (int n = 56; n >= 36 && !bits; n--) {
            void *want = (void *)(uintptr_t)(1ULL << n);
            void *got = mmap(want, (size_t)page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (got != MAP_FAILED) {
                munmap(got, (size_t)page_size);
                if (got == want)
                    bits = n + 1;
            }
        }
        _exit(bits);
    }
    int vst = 0;
    if (vp > 0 && waitpid(vp, &vst, 0) == vp && WIFEXITED(vst))
        va_bits = WEXITSTATUS(vst);
#if defined(__x86_64__)
    la57 = va_bits > 47;
#endif
    /* PUD_SHIFT: ARM64_HW_PGTABLE_LEVEL_SHIFT(max(1, 4 - levels)) with levels = (va_bits - 4) / (PAGE_SHIFT - 3):
     * a folded pud takes PGDIR_SHIFT, which is PMD_SHIFT at 2 levels; x86_64 (4 or 5 levels) gets 30 */
    unsigned page_shift = (unsigned)__builtin_ctzl((unsigned long)page_size), bits = page_shift - 3;
    int levels = va_bits ? (va_bits - 4) / (int)bits : 4, top = 4 - levels < 1 ? 1 : 4 - levels;
    pmd_shift = (unsigned)__builtin_ctzll(pmd_size);
    pud_shift = bits * (unsigned)(4 - top) + 3;
    /* PAGEMAP_SCAN, else pagemap + kpageflags (root), else nothing */
    fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    struct ptf_pm_scan_arg a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.start = WIN_LO;
    a.end = WIN_LO + pmd_size;
    a.vec = (uint64_t)(uintptr_t)regions;
    a.vec_len = 1;
    a.category_mask = PTF_PAGE_IS_PRESENT;
    a.return_mask = PTF_PAGE_IS_PRESENT;
    /* PTFUZZ_HOST_METHOD=kpageflags tests the fallback on a kernel that has PAGEMAP_SCAN */
    const char *force = getenv("PTFUZZ_HOST_METHOD");
    int want_kpf = force && !strcmp(force, "kpageflags");
    if (fd >= 0 && !want_kpf && ioctl(fd, PTF_PAGEMAP_SCAN, &a) >= 0) {
        method = M_SCAN;
    } else {
        uint64_t e = 0, fl;
        kpf_fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
        /* PFNs read as 0 without CAP_SYS_ADMIN: look at a page of our own data */
        if (fd >= 0 && kpf_fd >= 0 &&
            pread(fd, &e, 8, (off_t)((uintptr_t)&page_size / (uintptr_t)page_size * 8)) == 8 &&
            (e & ((1ULL << 55) - 1)) && pread(kpf_fd, &fl, 8, 0) == 8)
            method = M_KPF;
        if (kpf_fd >= 0)
            close(kpf_fd);
        kpf_fd = -1;
    }
    if (fd >= 0)
        close(fd);
}


/* ------------------------------------------------------------------------------------------ */
/* the root's entry points                                                                     */

/* One host operation of a trace, run for real: exec PID, fork PARENT CHILD, exit PID, mmap PID ADDR LEN FLAGS
 * (bit0 MADV_HUGEPAGE, bit1 hugetlb PMD_SIZE, bit2 hugetlb PUD_SIZE), shm_mmap PID ADDR LEN OBJ PGOFF,
 * munmap PID ADDR LEN, madvise PID ADDR LEN ADVICE (0 DONTNEED, 1 HUGEPAGE, 2 NOHUGEPAGE, 3 COLLAPSE),
 * fault PID ADDR WRITE [STAMP] (a nonzero STAMP: a write stores it as 32 bits at ADDR & ~3), mremap PID OLD_ADDR
 * OLD_LEN NEW_ADDR NEW_LEN (in place when NEW_ADDR == OLD_ADDR, else MAYMOVE|FIXED). Returns 0 or
 * -errno, or PTF_FAIL (with ptf_err) when it cannot be performed here. */
static long long ptf_host_op(const char *name, const uint64_t *a)
{
    if (a[0] >= NPROC)
        return ptf_fail("%s: pid %llu is not 0..%d", name, (unsigned long long)a[0], NPROC - 1);
    int s = (int)a[0];
    struct proc *p = &procs[s];
    if (!strcmp(name, "exec")) {
        kill_slot(s);
        int r = spawn(s);
        if (r == -ECHILD)
            return ptf_fail("process %d did not start", s);
        return r;
    }
    if (!strcmp(name, "fork")) {
        if (a[1] >= NPROC)
            return ptf_fail("fork: pid %llu is not 0..%d", (unsigned long long)a[1], NPROC - 1);
        if (!p->used)
            return -ESRCH;
        if (procs[a[1]].used)
            return -EEXIST;
        return root_fork(s, (int)a[1]);
    }
    if (!p->used)
        return -ESRCH;
    if (!strcmp(name, "exit")) {
        kill_slot(s);
        return 0;
    }
    uint32_t op = 0;
    if (!strcmp(name, "mmap")) {
        if (a[3] > 7)
            return ptf_fail("mmap: flags %llu is not 0..7", (unsigned long long)a[3]);
        if (a[2] > MAX_MAP)
            return ptf_fail("mmap: length %llu exceeds the helper's limit of 64 GiB", (unsigned long long)a[2]);
        op = C_MMAP;
    } else if (!strcmp(name, "shm_mmap")) {
        if (a[3] >= NOBJ)
            return ptf_fail("shm_mmap: obj %llu is not 0..%d", (unsigned long long)a[3], NOBJ - 1);
        if (a[2] > MAX_MAP)
            return ptf_fail("shm_mmap: length %llu exceeds the helper's limit of 64 GiB", (unsigned long long)a[2]);
        if (a[4] > memfd_size / (uint64_t)page_size)
            return ptf_fail("shm_mmap: pgoff %llu is beyond the %llu-byte object", (unsigned long long)a[4],
                            (unsigned long long)memfd_size);
        op = C_SHM;
    } else if (!strcmp(name, "hugetlb_mmap")) {
        if (!hugetlb_files)
            return ptf_fail("hugetlb_mmap: no hugetlbfs files here (memfd_create MFD_HUGETLB: %s)",
                            strerror(hugetlb_errno));
        if (a[3] >= NHFILE)
            return ptf_fail("hugetlb_mmap: file %llu is not 0..%d", (unsigned long long)a[3], NHFILE - 1);
        if (a[2] > MAX_MAP)
            return ptf_fail("hugetlb_mmap: length %llu exceeds the helper's limit of 64 GiB", (unsigned long long)a[2]);
        if (a[4] > memfd_size / (uint64_t)page_size)
            return ptf_fail("hugetlb_mmap: pgoff %llu is beyond %llu bytes", (unsigned long long)a[4],
                            (unsigned long long)memfd_size);
        op = C_HMMAP;
    } else if (!strcmp(name, "munmap")) {
        op = C_MUNMAP;
    } else if (!strcmp(name, "madvise")) {
        if (a[3] > 3)
            return ptf_fail("madvise: advice %llu is not 0..3", (unsigned long long)a[3]);
        op = C_MADVISE;
    } else if (!strcmp(name, "mremap")) {
        /* both ranges in the window: the old one is unmapped or moved, the new one replaced */
        if (!in_window(a[1], a[2] ? a[2] : 1) || !in_window(a[3], a[4] ? a[4] : 1))
            return ptf_fail("mremap: [%#llx, +%#llx) -> [%#llx, +%#llx) is outside " WIN_TEXT,
                            (unsigned long long)a[1], (unsigned long long)a[2], (unsigned long long)a[3],
                            (unsigned long long)a[4]);
        if (a[4] > MAX_MAP)
            return ptf_fail("mremap: length %llu exceeds the helper's limit of 64 GiB", (unsigned long long)a[4]);
        if (send_req(s, C_MREMAP, a[1], a[2], a[3], a[4]))
            return lost(s, name);
        return relay_result(s, name);
    } else if (!strcmp(name, "fault")) {
        if (a[2] > 1)
            return ptf_fail("fault: write %llu is not 0..1", (unsigned long long)a[2]);
        if (!in_window(a[1], 1))
            return ptf_fail("fault: address %#llx is outside " WIN_TEXT, (unsigned long long)a[1]);
        if (send_req(s, C_FAULT, a[1], a[2], a[3], 0))
            return lost(s, "fault");
        return relay_result(s, name);
    } else {
        return ptf_fail("unknown operation %.64s", name);
    }
    /* mmap, shm_mmap, hugetlb_mmap, munmap, madvise: the range must be in the window so that the program's own
     * mappings can never be touched */
    if (!in_window(a[1], a[2]))
        return ptf_fail("%s: [%#llx, +%#llx) is outside " WIN_TEXT, name, (unsigned long long)a[1],
                        (unsigned long long)a[2]);
    if (send_req(s, op, a[1], a[2], a[3], a[4]))
        return lost(s, name);
    return relay_result(s, name);
}

/* Figures of process pid over [lo, hi): 0 with outbuf = "f BYTES N ADDR.." (or the process's "e ..."), -ESRCH
 * when there is no such process, or PTF_FAIL. */
__attribute__((unused)) static long long ptf_figures(uint64_t pid, uint64_t lo, uint64_t hi)
{
    if (pid >= NPROC)
        return ptf_fail("figures: pid %llu is not 0..%d", (unsigned long long)pid, NPROC - 1);
    if (!procs[pid].used)
        return -ESRCH;
    if (lo >= hi || !in_window(lo, hi - lo))
        return ptf_fail("figures: [%#llx, %#llx) is not a range inside " WIN_TEXT, (unsigned long long)lo,
                        (unsigned long long)hi);
    if (send_req((int)pid, C_FIGURES, lo, hi, 0, 0))
        return lost((int)pid, "figures");
    return relay((int)pid, "figures");
}

/* Start-up, after a guest's init (if any): stdio only, the shm objects, the host's geometry, the helper's own
 * memory out of THP's reach, the baseline VmPTE. Fatal problems end the program (die). */
static void ptf_init(void)
{
    root_pid = getpid();
    /* nothing inherited beyond stdio; 0..2 open, so that the memfds (kept in every child, in one
     * contiguous run) never take a stdio number */
    if (syscall(SYS_close_range, 3, ~0U, 0) && errno == ENOSYS)
        for (int fd = 3; fd < 4096; fd++)
            close(fd);
    int fd;
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd < 3)
        ;
    if (fd >= 0)
        close(fd);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_CHILD_SUBREAPER, 1); /* processes whose real parent exited come back to us to be reaped */
    for (int i = 0; i < NOBJ; i++) {
        char name[32];
        snprintf(name, sizeof name, "ptfuzz-shm-%d", i);
        memfd[i] = (int)syscall(SYS_memfd_create, name, 0);
        if (memfd[i] < 0)
            die("memfd_create");
        if (i && memfd[i] != memfd[i - 1] + 1)
            die("memfds are not contiguous");
    }
    /* sparse objects, as large as the kernel accepts up to 1 TiB: shm_mmap may use any pgoff */
    for (memfd_size = 1ULL << 40; memfd_size >= (1ULL << 30); memfd_size >>= 1)
        if (!ftruncate(memfd[0], (off_t)memfd_size))
            break;
    for (int i = 1; i < NOBJ; i++)
        if (ftruncate(memfd[i], (off_t)memfd_size))
            die("ftruncate memfd");
    /* the hugetlbfs files: empty (an mmap with PROT_WRITE extends i_size, hugetlbfs_file_mmap), of the default
     * hstate, PMD_SIZE; without hugetlbfs hugetlb_mmap is refused with the reason */
    hugetlb_files = NHFILE;
    for (int i = 0; i < NHFILE; i++) {
        char name[32];
        snprintf(name, sizeof name, "ptfuzz-hugetlb-%d", i);
        hugefd[i] = (int)syscall(SYS_memfd_create, name, 4 /* MFD_HUGETLB */);
        if (hugefd[i] < 0 || hugefd[i] != (i ? hugefd[i - 1] : memfd[NOBJ - 1]) + 1) {
            hugetlb_errno = hugefd[i] < 0 ? errno : EBADF;
            for (int j = 0; j <= i; j++)
                if (hugefd[j] >= 0)
                    close(hugefd[j]);
            hugetlb_files = 0;
            break;
        }
    }
    detect();
    for_each_mapping(window_clash);
    for_each_mapping(nohuge_one); /* no THP (nor khugepaged) in the helper's own memory */
    uint64_t base = 0;
    if (tmp_child(C_VMPTE) || strncmp(outbuf, "r ", 2) || parse_u64(outbuf + 2, &base))
        die("measuring the baseline");
    baseline = (long long)base;
}
#endif /* PTFUZZ_OPS_H */
