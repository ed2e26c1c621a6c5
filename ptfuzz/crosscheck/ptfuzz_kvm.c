/*
 * ptfuzz-kvm: the real-kernel side of `ptfuzz crosscheck --kvm` (this host's /dev/kvm, or an arm64 QEMU guest's).
 *
 * A root helper reads one request line from stdin and answers with exactly one line on stdout. Each trace
 * process (pid 0..63) is a real child process that the root talks to over an AF_UNIX socket, and every VM
 * operation runs in the process that created the VM (kvm->mm == current->mm) while it lives; once it has exited
 * or was replaced by an exec, the root itself issues the ioctl on its copy of the VM's fds, as any other holder
 * of the fd would, and gets what KVM gives a foreign mm (-EIO).
 *
 *   hello                          -> ok api=N nr_memslots=N page=N release=R machine=M guest=0|1
 *   exec PID                       -> r 0                (a fresh process, replacing one that exists)
 *   fork PARENT CHILD              -> r 0 | r -3 | r -17 | r -errno
 *   exit PID                       -> r 0 | r -3
 *   mmap PID ADDR LEN FLAGS        -> r RES   (private anonymous, MAP_FIXED; bit0 MADV_HUGEPAGE)
 *   munmap PID ADDR LEN            -> r RES
 *   madvise PID ADDR LEN ADVICE    -> r RES   (0 DONTNEED, 1 HUGEPAGE, 2 NOHUGEPAGE, 3 COLLAPSE)
 *   fault PID ADDR WRITE STAMP     -> r 0 | r -14        (a write stores the 32-bit STAMP at ADDR & ~3)
 *   vm_create VM PID TYPE          -> r RES   (KVM_CREATE_VM(TYPE), one vCPU, the helper's code page)
 *   memslot VM SLOT GPA HVA LEN    -> r RES   (KVM_SET_USER_MEMORY_REGION, flags 0)
 *   guest_fault VM GPA WRITE STAMP -> g RES GUEST HOST PRESENT EXIT
 *   vm_destroy VM                  -> r 0 | r -2         (every fd of the VM closed)
 *   probe                          -> ok runs=N insn_emulation=N pf_fixed=N pf_taken=N  (how guest accesses are served)
 *   reset                          -> r 0                (every process killed and reaped, every VM closed)
 *   secpt                          -> ok secpt=KB        (SecPageTables after vm.stat_refresh; -1 when absent)
 *   host                           -> ok host, then the console is /ptfuzz-host's until its quit, then r STATUS
 *
 * What each operation does is ptfuzz_ops.h's (the processes, the host operations) and ptfuzz_kvm_ops.h's (the
 * VMs, the guest per arch), which `ptfuzz repro-c` reproducers inline too: this file is the line protocol, the
 * probe, the guest's init and main. For guest_fault, RES is 0 when the access completed, -14 when it hit no
 * memslot (the model's -EFAULT) and -errno when KVM_RUN failed; GUEST is what the guest read (or wrote), HOST
 * what the owner process sees at the hva after the run (0 for an anonymous page it does not map), PRESENT
 * whether it maps it; EXIT names how the run ended. The VM / process bookkeeping answers of the trace format
 * (-2 no such VM, -3 no such process, -17 VM or process exists) are the helper's, as the model's contract has
 * them. Errors: `e MESSAGE`. EOF on stdin: everything is killed, reaped and closed, then the helper exits.
 */
#define _GNU_SOURCE
#define PTF_NAME "ptfuzz-kvm"
#define PTF_CHILD_EXTRA ptf_kvm_child
#define PTF_CHILD_START ptf_kvm_forget
#include "ptfuzz_ops.h"
#include "ptfuzz_kvm_ops.h"

#include <sys/utsname.h>

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ptf_vline(0, fmt, ap);
    va_end(ap);
}

/* An operation's reply: `r RES`, or `e WHY` when the helper could not perform it. */
static void out_result(long long r)
{
    if (r == PTF_FAIL)
        out("e %s", ptf_err);
    else
        out("r %lld", r);
}

/* ---- the probe: how this host's KVM serves the guest's accesses ---- */

/* A vCPU statistic by name (KVM_GET_STATS_FD), or -1. */
static long long vcpu_stat(int vcpufd, const char *name)
{
    static char descs[1 << 16];
    struct kvm_stats_header h;
    long long val = -1;
    int sfd = ioctl(vcpufd, KVM_GET_STATS_FD, NULL);
    if (sfd < 0)
        return -1;
    if (pread(sfd, &h, sizeof h, 0) != (ssize_t)sizeof h)
        goto out;
    size_t dsz = sizeof(struct kvm_stats_desc) + h.name_size;
    if (dsz * h.num_desc > sizeof descs || pread(sfd, descs, dsz * h.num_desc, h.desc_offset) < 0)
        goto out;
    for (unsigned i = 0; i < h.num_desc; i++) {
        struct kvm_stats_desc *d = (struct kvm_stats_desc *)(descs + i * dsz);
        uint64_t v;
        if (!strcmp(d->name, name) && pread(sfd, &v, sizeof v, h.data_offset + d->offset) == (ssize_t)sizeof v) {
            val = (long long)v;
            break;
        }
    }
out:
    close(sfd);
    return val;
}

/* RUNS reads of distinct pages by a VM of the root's own, then the vCPU's counters. An instruction emulated per
 * instruction run (mov, out, hlt) and no page fault fixed: the emulator copies through the hva
 * (kvm_vcpu_read_guest), and no shadow or TDP page table is built. */
static void kvm_probe(void)
{
    enum { RUNS = 8 };
    struct cvm v;
    memset(&v, 0, sizeof v);
    v.vcpufd = -1;
    uint64_t len = RUNS * (uint64_t)page_size;
    uint8_t *data = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED || (kvm_fd < 0 && (kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0)) {
        out("e probe: %s", strerror(errno));
        return;
    }
    int ok = 0;
    if ((v.vmfd = ioctl(kvm_fd, KVM_CREATE_VM, 0UL)) >= 0) {
        v.used = 1;
        if (!vm_setup(&v) && !vm_memslot(&v, 0, 0x100000, (uint64_t)(uintptr_t)data, len)) {
            ok = 1;
            for (int i = 0; i < RUNS; i++) {
                data[i * page_size] = (uint8_t)(i + 1);
                struct ptf_access a = guest_access(&v, 0x100000 + (uint64_t)i * (uint64_t)page_size, 0, 0);
                ok &= a.res == 0 && a.guest == (uint32_t)(i + 1);
            }
        }
    }
    if (ok)
        out("ok runs=%d insn_emulation=%lld pf_fixed=%lld pf_taken=%lld", RUNS, vcpu_stat(v.vcpufd, "insn_emulation"),
            vcpu_stat(v.vcpufd, "pf_fixed"), vcpu_stat(v.vcpufd, "pf_taken"));
    else
        out("e probe: the guest did not run (%s)", strerror(errno));
    vm_close(&v);
    munmap(data, len);
}

/* ---- as a QEMU guest's /init (`ptfuzz crosscheck --kvm --kernel`) ---- */

/* `host`: the guest's ptfuzz-host (/ptfuzz-host, beside /init) takes the console until its `quit`; then `r STATUS`.
 * Crosscheck's host probes run there, in the same boot. */
static void run_host_helper(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        execl("/ptfuzz-host", "ptfuzz-host", (char *)NULL);
        _exit(127);
    }
    if (pid < 0) {
        out("e host: fork: %s", strerror(errno));
        return;
    }
    out("ok host"); /* after the fork: what comes next on stdin is the child's */
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    reap();
    out("r %d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

/* SecPageTables (kB) after vm.stat_refresh: KVM's stage-2 / TDP table pages, every VM's; -1 when absent. */
static long long sec_page_tables_once(void)
{
    write_file("/proc/sys/vm/stat_refresh", "1");
    return meminfo_kb("SecPageTables");
}

/* The same once it holds still: a table unlinked from stage 2 is freed, and uncounted, by an RCU callback
 * (stage2_free_unlinked_table), a grace period after the operation that unlinked it. Three equal readings 5 ms
 * apart, within 200 ms. */
static long long sec_page_tables(void)
{
    long long last = sec_page_tables_once();
    for (int same = 0, i = 0; same < 2 && i < 40; i++) {
        usleep(5000);
        long long now = sec_page_tables_once();
        same = now == last ? same + 1 : 0;
        last = now;
    }
    return last;
}

/* ---- the line protocol ---- */

static int parse(char *line, char **name, uint64_t *a, int max)
{
    int n = -1;
    for (char *tok = strtok(line, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
        if (n < 0) {
            *name = tok;
        } else if (n < max) {
            char *end;
            errno = 0;
            a[n] = strtoull(tok, &end, 0);
            if (*end || errno)
                return -2;
        } else {
            return -2;
        }
        n++;
    }
    return n;
}

static void hello(void)
{
    int k = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (k < 0) {
        out("e /dev/kvm: %s", strerror(errno));
        return;
    }
    int api = ioctl(k, KVM_GET_API_VERSION, 0), slots = ioctl(k, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
    close(k);
    struct utsname u;
    uname(&u);
    out("ok api=%d nr_memslots=%d page=%ld release=%s machine=%s guest=%d", api, slots, page_size, u.release,
        u.machine, guest);
}

static void reset_all(void)
{
    ptf_kvm_reset();
    for (int s = 0; s < NPROC; s++)
        kill_slot(s);
    reap();
}

/* A host operation of a trace: the helper's own checks of its arguments (its answers as they always were), then
 * ptfuzz_ops.h's. */
static void host_op(const char *name, const uint64_t *a, int n)
{
    int ex = !strcmp(name, "exec"), fk = !strcmp(name, "fork"), mu = !strcmp(name, "munmap");
    int ma = !strcmp(name, "madvise"), fa = !strcmp(name, "fault");
    int need = ex || !strcmp(name, "exit") ? 1 : fk ? 2 : mu ? 3 : 4;
    if (n != need) {
        out("e %s takes %d arguments", name, need);
    } else if (a[0] >= NPROC && ex) {
        out("e pid out of range");
    } else if (ex) {
        out_result(ptf_host_op(name, a));
    } else if (a[0] >= NPROC || !procs[a[0]].used || (fk && a[1] >= NPROC)) {
        out("r %d", -ESRCH);
    } else if (fk) {
        out_result(procs[a[1]].used ? -EEXIST : ptf_host_op(name, a));
    } else if (!strcmp(name, "exit")) {
        out_result(ptf_host_op(name, a));
    } else if (a[1] < WIN_LO || a[1] >= WIN_HI || (fa ? 4 : a[2]) > WIN_HI - a[1]) {
        out("e address outside [2^44, 2^46)");
    } else if (ma && a[3] > 3) {
        out("r %d", -EINVAL);
    } else {
        out_result(ptf_host_op(name, a));
    }
}

/* A VM operation of a trace: ptfuzz_kvm_ops.h's; guest_fault's reply says what the guest and the owner saw. */
static void vm_op(const char *name, const uint64_t *a, int n)
{
    int gf = !strcmp(name, "guest_fault");
    int need = !strcmp(name, "vm_create") ? 3 : !strcmp(name, "memslot") ? 5 : gf ? 4 : 1;
    if (n != need) {
        out("e %s takes %d arguments", name, need);
        return;
    }
    if (need == 3 && a[0] >= NVM) {
        out("e vm out of range");
        return;
    }
    long long r = ptf_kvm_op(name, a, gf ? a[3] : 0);
    if (r == PTF_FAIL || !gf)
        out_result(r);
    else
        out("g %lld %u %u %u %s", r, ptf_access.guest, ptf_access.host, ptf_access.present,
            exit_names[ptf_access.how]);
}

static void serve(void)
{
    static char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        char *name = NULL;
        uint64_t a[6] = {0};
        int n = parse(line, &name, a, 6);
        if (n < 0) {
            out("e bad request");
            continue;
        }
        reap();
        if (!strcmp(name, "hello"))
            hello();
        else if (!strcmp(name, "host"))
            run_host_helper();
        else if (!strcmp(name, "secpt"))
            out("ok secpt=%lld", sec_page_tables());
        else if (!strcmp(name, "probe"))
            kvm_probe();
        else if (!strcmp(name, "reset")) {
            reset_all();
            out("r 0");
        } else if (!strcmp(name, "exec") || !strcmp(name, "exit") || !strcmp(name, "fork") || !strcmp(name, "mmap") ||
                 !strcmp(name, "munmap") || !strcmp(name, "madvise") || !strcmp(name, "fault"))
            host_op(name, a, n);
        else if (!strcmp(name, "vm_create") || !strcmp(name, "vm_destroy") || !strcmp(name, "memslot") ||
                 !strcmp(name, "guest_fault"))
            vm_op(name, a, n);
        else if (!strcmp(name, "quit"))
            break;
        else
            out("e unknown request %s", name);
    }
}

int main(void)
{
    if (getpid() == 1)
        ptf_guest_init();
    ptf_init();
    signal(SIGINT, SIG_IGN); /* Ctrl-C is the client's: it closes our stdin, and we clean up */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct sigaction sa; /* the probe's look at its own memory (host_value) */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fault_handler;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    if (guest)
        out("ptfuzz-kvm ready");
    serve();
    ptf_kvm_reset();
    shutdown_all(); /* every process killed and reaped; as a guest's init, the guest powered off */
}
