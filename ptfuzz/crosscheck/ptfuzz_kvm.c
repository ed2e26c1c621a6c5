/*
 * ptfuzz-kvm: the real-kernel side of `ptfuzz crosscheck --kvm` (x86_64, /dev/kvm).
 *
 * A root helper reads one request line from stdin and answers with exactly one line on stdout. Each trace
 * process (pid 0..63) is a real child process that the root talks to over an AF_UNIX socket, and every VM
 * operation runs in the process that created the VM (kvm->mm == current->mm) while it lives; once it has exited
 * or was replaced by an exec, the root itself issues the ioctl on its copy of the VM's fds, as any other holder
 * of the fd would, and gets what KVM gives a foreign mm (-EIO).
 *
 *   hello                          -> ok api=N nr_memslots=N
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
 * guest_fault runs the vCPU on a tiny 32-bit protected-mode guest (paging off) whose code lies in a page of its
 * own at gpa CODE_GPA (slot CODE_SLOT, outside the trace's 0..31): `mov eax,[ebx]` (or `mov [ebx],eax` with
 * eax = STAMP), `out 0x10,eax`, `hlt`. RES is 0 when the access completed, -14 when it hit no memslot (KVM
 * exits to userspace for MMIO: the model's -EFAULT) and -errno when KVM_RUN failed (-14: the hva is not
 * mapped). GUEST is what the guest read (or wrote), HOST what the owner process sees at the hva after the run
 * (0 for an anonymous page it does not map), PRESENT whether it maps it; EXIT names how the run ended.
 * The VM / process bookkeeping answers of the trace format (-2 no such VM, -3 no such process, -17 VM or
 * process exists) are the helper's, as the model's contract has them.
 * Errors: `e MESSAGE`. EOF on stdin: everything is killed, reaped and closed, then the helper exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif

#define NPROC 64
#define WIN_LO (1ULL << 44) /* host operations stay in [WIN_LO, WIN_HI), far from the helper's own mappings */
#define WIN_HI (1ULL << 46)
#define NVM 16
#define NSLOT 32
#define CODE_GPA 0xfffff000ULL
#define CODE_SLOT 100
#define IO_PORT 0x10
#define TIMEOUT_MS 20000

enum { C_MMAP = 1, C_MUNMAP, C_MADVISE, C_FAULT, C_FORK, C_VM_CREATE, C_MEMSLOT, C_GFAULT, C_VM_CLOSE };
enum { X_NONE, X_IO, X_HLT, X_MMIO, X_ERRNO, X_OTHER, X_EXC };
static const char *const exit_names[] = {"none", "io", "hlt", "mmio", "errno", "other", "exc"};

struct req {
    uint32_t op, pad;
    uint64_t a[5];
};
struct rep {
    int64_t res;
    uint64_t v[4];
};

/* ---- a trace process ---- */

static int chan = -1, kvm_fd = -1;
static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static long page_size;
static sigjmp_buf fault_env;
static volatile sig_atomic_t in_fault;

struct cvm {
    int used, vmfd, vcpufd;
    struct kvm_run *run;
    size_t run_size;
    uint8_t *code;
    struct { int used; uint64_t gpa, hva, len; } slot[NSLOT];
};
static struct cvm cvms[NVM];

static void fault_handler(int sig)
{
    if (!in_fault) {
        signal(sig, SIG_DFL);
        return;
    }
    in_fault = 0;
    siglongjmp(fault_env, 1);
}

/* A 32-bit load or store at addr & ~3 (SIGSEGV/SIGBUS: -EFAULT). */
static int touch(uint64_t addr, int write, uint32_t stamp, uint32_t *val)
{
    volatile uint32_t *p = (volatile uint32_t *)(uintptr_t)(addr & ~3ULL);
    if (sigsetjmp(fault_env, 1))
        return -EFAULT;
    in_fault = 1;
    if (write)
        *p = stamp;
    else if (val)
        *val = *p;
    else
        (void)*p;
    in_fault = 0;
    return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
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

/* A reply, with up to two fds passed along (SCM_RIGHTS). */
static void reply(int64_t res, uint64_t v0, uint64_t v1, uint64_t v2, uint64_t v3, const int *fds, int nfds)
{
    struct rep r = {res, {v0, v1, v2, v3}};
    struct iovec iov = {&r, sizeof r};
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
    if (w != (ssize_t)sizeof r)
        _exit(0);
}

static void reply_r(int64_t res)
{
    reply(res, 0, 0, 0, 0, NULL, 0);
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

static void vm_close(struct cvm *v)
{
    if (!v->used)
        return;
    if (v->run)
        munmap(v->run, v->run_size);
    if (v->code)
        munmap(v->code, (size_t)page_size);
    close(v->vcpufd);
    close(v->vmfd);
    memset(v, 0, sizeof *v);
}

/* ---- the guest, per arch: its code page's contents and gpa, the vCPU's setup, one access ---- */

#if defined(__x86_64__)
/* A 32-bit protected-mode guest, paging off (gpa = linear address), its code at CODE_GPA: `mov eax,[ebx]` (or
 * `mov [ebx],eax` with eax = STAMP), `out 0x10,eax`, `hlt`. */
static uint64_t code_gpa(void)
{
    return CODE_GPA;
}

static void guest_code_x86(uint8_t *code)
{
    static const uint8_t prog[] = {
        0x8b, 0x03, 0xef, 0xf4, /* +0: mov eax,[ebx]; out dx,eax; hlt */
        [16] = 0x89, 0x03, 0xef, 0xf4, /* +16: mov [ebx],eax; out dx,eax; hlt */
    };
    memcpy(code, prog, sizeof prog);
}

static int guest_setup_x86(struct cvm *v)
{
    struct kvm_sregs s;
    if (ioctl(v->vcpufd, KVM_GET_SREGS, &s))
        return -errno;
    struct kvm_segment seg = {.base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1,
                              .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
    s.cs = seg;
    seg.type = 3;
    seg.selector = 16;
    s.ds = s.es = s.fs = s.gs = s.ss = seg;
    s.cr0 |= 1; /* protected mode, paging off: gpa = linear address */
    if (ioctl(v->vcpufd, KVM_SET_SREGS, &s))
        return -errno;
    return 0;
}

/* One access: RES 0 and what the guest read (or wrote), -14 for a gpa without memslot (an MMIO exit, completed
 * with zeros, the run going on to the hlt), -errno when KVM_RUN failed. */
static int64_t guest_run_x86(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp, uint32_t *guest, int *howp)
{
    struct kvm_regs g;
    memset(&g, 0, sizeof g);
    g.rip = CODE_GPA + (write ? 16 : 0);
    g.rbx = gpa & ~3ULL;
    g.rax = write ? (uint32_t)stamp : 0;
    g.rdx = IO_PORT;
    g.rflags = 2;
    if (ioctl(v->vcpufd, KVM_SET_REGS, &g)) {
        *howp = X_ERRNO;
        return -errno;
    }
    int64_t res = 0;
    int how = X_NONE, mmio = 0;
    for (int i = 0; i < 8 && how != X_HLT; i++) {
        if (ioctl(v->vcpufd, KVM_RUN, 0)) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            res = -errno;
            how = X_ERRNO;
            break;
        }
        struct kvm_run *run = v->run;
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == IO_PORT && run->io.size == 4) {
            memcpy(guest, (char *)run + run->io.data_offset, 4);
            how = X_IO;
        } else if (run->exit_reason == KVM_EXIT_HLT) {
            how = X_HLT;
        } else if (run->exit_reason == KVM_EXIT_MMIO) {
            mmio = 1; /* no memslot at the gpa: complete the access with zeros and go on to the hlt */
            if (!run->mmio.is_write)
                memset(run->mmio.data, 0, sizeof run->mmio.data);
        } else {
            res = -10000 - (int64_t)run->exit_reason;
            how = X_OTHER;
            break;
        }
    }
    if (how == X_NONE)
        how = X_OTHER, res = -10000;
    if (mmio && how == X_HLT)
        res = -EFAULT, how = X_MMIO;
    *howp = how;
    return res;
}
#endif /* __x86_64__ */

#if defined(__aarch64__)
/* An AArch64 guest at EL1 with its MMU off (gpa = virtual address), its code page at 2^32 - 2 pages, the page
 * above it in no memslot (MMIO): `ldr w1,[x0]` (or `str w1,[x0]` with w1 = STAMP), then `str w1,[x2]` with x2
 * the MMIO page: the exit that ends the access and carries what the guest read (or wrote). An exception in the
 * guest goes to VBAR_EL1 (the code page + 2K), whose every vector writes x30 to the MMIO page + 0x100. */
#define ARM64_CORE_REG(x) (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | \
                           (offsetof(struct kvm_regs, x) / sizeof(uint32_t)))
#define ARM64_VBAR_EL1 ARM64_SYS_REG(3, 0, 12, 0, 0)
#define ARM64_EXC_OFF 0x100
#define ARM64_VEC_OFF 0x800

static uint64_t code_gpa(void)
{
    return (1ULL << 32) - 2 * (uint64_t)page_size;
}

static uint64_t mmio_gpa(void)
{
    return (1ULL << 32) - (uint64_t)page_size;
}

static void guest_code_arm64(uint8_t *code)
{
    static const uint32_t rd[] = {0xb9400001, 0xb9000041, 0x14000000}; /* ldr w1,[x0]; str w1,[x2]; b . */
    static const uint32_t wr[] = {0xb9000001, 0xb9000041, 0x14000000}; /* str w1,[x0]; str w1,[x2]; b . */
    static const uint32_t vec[] = {0xf900007e, 0x14000000};           /* str x30,[x3]; b . */
    memcpy(code, rd, sizeof rd);
    memcpy(code + 16, wr, sizeof wr);
    for (int i = 0; i < 16; i++)
        memcpy(code + ARM64_VEC_OFF + i * 0x80, vec, sizeof vec);
}

static int set_reg(int vcpufd, uint64_t id, uint64_t val)
{
    struct kvm_one_reg r = {id, (uint64_t)(uintptr_t)&val};
    return ioctl(vcpufd, KVM_SET_ONE_REG, &r) ? -errno : 0;
}

static int guest_setup_arm64(struct cvm *v)
{
    struct kvm_vcpu_init init;
    memset(&init, 0, sizeof init);
    if (ioctl(v->vmfd, KVM_ARM_PREFERRED_TARGET, &init))
        return -errno;
    if (ioctl(v->vcpufd, KVM_ARM_VCPU_INIT, &init))
        return -errno;
    return set_reg(v->vcpufd, ARM64_VBAR_EL1, code_gpa() + ARM64_VEC_OFF);
}

/* Completes an MMIO exit without running the guest (immediate_exit: KVM_RUN finishes the access, commits the
 * PC and returns -EINTR), so that the next access starts from the PC it sets. */
static void mmio_complete_arm64(struct cvm *v)
{
    v->run->immediate_exit = 1;
    if (v->run->exit_reason == KVM_EXIT_MMIO && !v->run->mmio.is_write)
        memset(v->run->mmio.data, 0, sizeof v->run->mmio.data);
    (void)ioctl(v->vcpufd, KVM_RUN, 0);
    v->run->immediate_exit = 0;
}

/* One access: RES 0 and what the guest read (or wrote), -14 for a gpa without memslot (an MMIO exit at the gpa:
 * the run stops there), -errno when KVM_RUN failed. */
static int64_t guest_run_arm64(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp, uint32_t *guest,
                               int *howp)
{
    int ret;
    if ((ret = set_reg(v->vcpufd, ARM64_CORE_REG(regs.pc), code_gpa() + (write ? 16 : 0))) ||
        (ret = set_reg(v->vcpufd, ARM64_CORE_REG(regs.regs[0]), gpa & ~3ULL)) ||
        (ret = set_reg(v->vcpufd, ARM64_CORE_REG(regs.regs[1]), write ? (uint32_t)stamp : 0)) ||
        (ret = set_reg(v->vcpufd, ARM64_CORE_REG(regs.regs[2]), mmio_gpa())) ||
        (ret = set_reg(v->vcpufd, ARM64_CORE_REG(regs.regs[3]), mmio_gpa() + ARM64_EXC_OFF))) {
        *howp = X_ERRNO;
        return ret;
    }
    for (int i = 0; i < 8; i++) {
        if (ioctl(v->vcpufd, KVM_RUN, 0)) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            *howp = X_ERRNO;
            return -errno;
        }
        struct kvm_run *run = v->run;
        if (run->exit_reason != KVM_EXIT_MMIO) {
            *howp = X_OTHER;
            return -10000 - (int64_t)run->exit_reason;
        }
        uint64_t at = run->mmio.phys_addr;
        uint32_t data = 0;
        memcpy(&data, run->mmio.data, 4);
        mmio_complete_arm64(v);
        if (at == mmio_gpa() && run->mmio.is_write) {
            *guest = data;
            *howp = X_IO;
            return 0;
        }
        if (at == mmio_gpa() + ARM64_EXC_OFF) {
            *howp = X_EXC;
            return -10100;
        }
        *howp = X_MMIO; /* the access itself: no memslot at the gpa */
        return -EFAULT;
    }
    *howp = X_OTHER;
    return -10000;
}
#endif /* __aarch64__ */

static int vm_setup(struct cvm *v)
{
    v->code = mmap(NULL, (size_t)page_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (v->code == MAP_FAILED) {
        v->code = NULL;
        return -errno;
    }
#if defined(__x86_64__)
    guest_code_x86(v->code);
#elif defined(__aarch64__)
    guest_code_arm64(v->code);
#endif
    struct kvm_userspace_memory_region r = {CODE_SLOT, 0, code_gpa(), (uint64_t)page_size,
                                            (uint64_t)(uintptr_t)v->code};
    if (ioctl(v->vmfd, KVM_SET_USER_MEMORY_REGION, &r))
        return -errno;
    v->vcpufd = ioctl(v->vmfd, KVM_CREATE_VCPU, 0);
    if (v->vcpufd < 0)
        return -errno;
    int sz = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0)
        return -EINVAL;
    v->run_size = (size_t)sz;
    v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpufd, 0);
    if (v->run == MAP_FAILED) {
        v->run = NULL;
        return -errno;
    }
#if defined(__x86_64__)
    return guest_setup_x86(v);
#elif defined(__aarch64__)
    return guest_setup_arm64(v);
#endif
}

static void do_vm_create(uint64_t vm, uint64_t type)
{
    struct cvm *v = &cvms[vm];
    vm_close(v);
    if (kvm_fd < 0 && (kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0) {
        reply_r(-errno);
        return;
    }
    v->vmfd = ioctl(kvm_fd, KVM_CREATE_VM, (unsigned long)type);
    if (v->vmfd < 0) {
        reply_r(-errno);
        return;
    }
    v->used = 1;
    v->vcpufd = -1;
    int ret = vm_setup(v);
    if (ret) {
        /* the VM exists but cannot run guests: a helper error, not an operation result */
        vm_close(v);
        reply(-10000 + ret, 0, 0, 0, 0, NULL, 0);
        return;
    }
    int fds[2] = {v->vmfd, v->vcpufd};
    reply(0, 0, 0, 0, 0, fds, 2);
}

static void do_memslot(uint64_t vm, const uint64_t *a)
{
    struct cvm *v = &cvms[vm];
    struct kvm_userspace_memory_region r = {(uint32_t)a[0], 0, a[1], a[3], a[2]};
    if (ioctl(v->vmfd, KVM_SET_USER_MEMORY_REGION, &r)) {
        reply_r(-errno);
        return;
    }
    if (a[0] < NSLOT) {
        v->slot[a[0]].used = a[3] != 0;
        v->slot[a[0]].gpa = a[1];
        v->slot[a[0]].hva = a[2];
        v->slot[a[0]].len = a[3];
    }
    reply_r(0);
}

/* What this process maps at hva, without faulting anything in: (present, value). */
static void host_value(uint64_t hva, uint64_t *present, uint32_t *val)
{
    uint64_t e = 0;
    *present = 0;
    *val = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (pread(fd, &e, sizeof e, (off_t)(hva / (uint64_t)page_size * 8)) != (ssize_t)sizeof e)
        e = 0;
    close(fd);
    if (!(e >> 63 & 1))
        return; /* an anonymous page not mapped reads as zero (a swapped one is not expected here) */
    *present = 1;
    touch(hva, 0, 0, val);
}

struct access {
    int64_t res;
    uint32_t guest, host;
    uint64_t present;
    int how;
};

static struct access guest_access(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp);

static void do_guest_fault(uint64_t vm, uint64_t gpa, uint64_t write, uint64_t stamp)
{
    struct access a = guest_access(&cvms[vm], gpa, write, stamp);
    reply(a.res, a.guest, a.host, a.present, (uint64_t)a.how, NULL, 0);
}

static struct access guest_access(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp)
{
    uint32_t guest = 0;
    int how = X_NONE;
#if defined(__x86_64__)
    int64_t res = guest_run_x86(v, gpa, write, stamp, &guest, &how);
#elif defined(__aarch64__)
    int64_t res = guest_run_arm64(v, gpa, write, stamp, &guest, &how);
#endif
    uint64_t present = 0;
    uint32_t host = 0;
    if (res == 0) {
        for (int s = 0; s < NSLOT; s++)
            if (v->slot[s].used && gpa >= v->slot[s].gpa && gpa - v->slot[s].gpa < v->slot[s].len)
                host_value((v->slot[s].hva + (gpa - v->slot[s].gpa)) & ~3ULL, &present, &host);
    }
    return (struct access){res, guest, host, present, how};
}

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

/* How the guest's accesses are served here: RUNS reads of distinct pages, then the vCPU's counters. An
 * instruction emulated per instruction run (mov, out, hlt) and no page fault fixed: the emulator copies through
 * the hva (kvm_vcpu_read_guest), and no shadow or TDP page table is built. */
static void do_probe(void)
{
    enum { RUNS = 8 };
    struct cvm v;
    memset(&v, 0, sizeof v);
    v.vcpufd = -1;
    uint8_t *data = mmap(NULL, RUNS * (size_t)page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED || (kvm_fd < 0 && (kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0)) {
        out("e probe: %s", strerror(errno));
        return;
    }
    int ok = 0;
    if ((v.vmfd = ioctl(kvm_fd, KVM_CREATE_VM, 0UL)) >= 0) {
        v.used = 1;
        struct kvm_userspace_memory_region r = {0, 0, 0x100000, RUNS * (uint64_t)page_size, (uint64_t)(uintptr_t)data};
        if (!vm_setup(&v) && !ioctl(v.vmfd, KVM_SET_USER_MEMORY_REGION, &r)) {
            v.slot[0].used = 1;
            v.slot[0].gpa = 0x100000;
            v.slot[0].hva = (uint64_t)(uintptr_t)data;
            v.slot[0].len = RUNS * (uint64_t)page_size;
            ok = 1;
            for (int i = 0; i < RUNS; i++) {
                data[i * page_size] = (uint8_t)(i + 1);
                struct access a = guest_access(&v, 0x100000 + (uint64_t)i * (uint64_t)page_size, 0, 0);
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
    munmap(data, RUNS * (size_t)page_size);
}

/* Returns the new process's channel in the new process, -1 in the parent (which has replied). */
static int do_fork(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        reply_r(-errno);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        return sv[1];
    }
    close(sv[1]);
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        reply_r(-e);
        return -1;
    }
    reply(0, (uint64_t)pid, 0, 0, 0, &sv[0], 1);
    close(sv[0]);
    return -1;
}

static void child_loop(void)
{
    static const int advices[4] = {MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE};
    for (;;) {
        struct req r;
        if (read_full(chan, &r, sizeof r))
            _exit(0); /* EOF: the root is gone or killed us */
        void *addr = (void *)(uintptr_t)r.a[0];
        switch (r.op) {
        case C_MMAP: {
            void *p = mmap(addr, r.a[1], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            int ret = p == MAP_FAILED ? -errno : 0;
            if (!ret && (r.a[2] & 1) && madvise(p, r.a[1], MADV_HUGEPAGE))
                ret = -errno;
            reply_r(ret);
            break;
        }
        case C_MUNMAP:
            reply_r(munmap(addr, r.a[1]) ? -errno : 0);
            break;
        case C_MADVISE:
            reply_r(madvise(addr, r.a[1], advices[r.a[2] & 3]) ? -errno : 0);
            break;
        case C_FAULT:
            reply_r(touch(r.a[0], (int)r.a[1], (uint32_t)r.a[2], NULL));
            break;
        case C_FORK: {
            int nc = do_fork();
            if (nc >= 0) {
                /* the new process owns no VM: its copies of the parent's VM fds go */
                close(chan);
                chan = nc;
                for (int i = 0; i < NVM; i++)
                    vm_close(&cvms[i]);
            }
            break;
        }
        case C_VM_CREATE:
            do_vm_create(r.a[0], r.a[1]);
            break;
        case C_MEMSLOT:
            do_memslot(r.a[0], &r.a[1]);
            break;
        case C_GFAULT:
            do_guest_fault(r.a[0], r.a[1], r.a[2], r.a[3]);
            break;
        case C_VM_CLOSE:
            vm_close(&cvms[r.a[0]]);
            reply_r(0);
            break;
        default:
            _exit(4);
        }
    }
}

/* ---- the root ---- */

struct proc {
    int used, sock;
    pid_t ospid;
    unsigned gen;
};
static struct proc procs[NPROC];
static unsigned next_gen = 1;

struct rvm {
    int used, owner, vmfd, vcpufd;
    unsigned gen;
};
static struct rvm rvms[NVM];

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void reap(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

/* SIGKILL, then the channel's EOF: the mm is torn down by then. */
static void kill_slot(int s)
{
    struct proc *p = &procs[s];
    if (!p->used)
        return;
    kill(p->ospid, SIGKILL);
    char buf[256];
    struct pollfd pf = {p->sock, POLLIN, 0};
    while (poll(&pf, 1, TIMEOUT_MS) > 0) {
        ssize_t r = read(p->sock, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    close(p->sock);
    memset(p, 0, sizeof *p);
    reap();
}

static int owner_alive(const struct rvm *v)
{
    return procs[v->owner].used && procs[v->owner].gen == v->gen;
}

/* One request to process s and its reply (fds received into fds[], up to 2): 0, or -1 (answered with e). */
static int ask(int s, uint32_t op, const uint64_t *a, int na, struct rep *rp, int *fds, int *nfds)
{
    struct req r;
    memset(&r, 0, sizeof r);
    r.op = op;
    for (int i = 0; i < na; i++)
        r.a[i] = a[i];
    if (write_all(procs[s].sock, &r, sizeof r)) {
        kill_slot(s);
        out("e process %d is gone", s);
        return -1;
    }
    struct pollfd pf = {procs[s].sock, POLLIN, 0};
    int pr;
    do
        pr = poll(&pf, 1, TIMEOUT_MS);
    while (pr < 0 && errno == EINTR);
    if (pr <= 0) {
        kill_slot(s);
        out("e process %d timed out", s);
        return -1;
    }
    struct iovec iov = {rp, sizeof *rp};
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
    ssize_t n;
    do
        n = recvmsg(procs[s].sock, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof *rp) {
        kill_slot(s);
        out("e process %d died", s);
        return -1;
    }
    int got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (fds && got < 2)
                    fds[got++] = fd;
                else
                    close(fd);
            }
        }
    if (nfds)
        *nfds = got;
    return 0;
}

static void adopt(int s, int sock, pid_t pid)
{
    procs[s].used = 1;
    procs[s].sock = sock;
    procs[s].ospid = pid;
    procs[s].gen = next_gen++;
}

static int spawn(int s)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    if (pid == 0) {
        /* only the channel stays open: dup it to 3, everything above goes */
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
        if (dup2(sv[1], 3) < 0)
            _exit(3);
        syscall(SYS_close_range, 4, ~0U, 0);
        chan = 3;
        for (int i = 0; i < NVM; i++)
            memset(&cvms[i], 0, sizeof cvms[i]);
        kvm_fd = -1;
        child_loop();
    }
    close(sv[1]);
    adopt(s, sv[0], pid);
    return 0;
}

static void vm_drop(int vm)
{
    struct rvm *v = &rvms[vm];
    if (!v->used)
        return;
    if (owner_alive(v)) {
        struct rep rp;
        uint64_t a[1] = {(uint64_t)vm};
        if (ask(v->owner, C_VM_CLOSE, a, 1, &rp, NULL, NULL)) {
            close(v->vmfd);
            close(v->vcpufd);
            memset(v, 0, sizeof *v);
            return; /* ask answered */
        }
    }
    close(v->vmfd);
    close(v->vcpufd);
    memset(v, 0, sizeof *v);
}

static void reset_all(void)
{
    for (int i = 0; i < NVM; i++)
        if (rvms[i].used) {
            close(rvms[i].vmfd);
            close(rvms[i].vcpufd);
            memset(&rvms[i], 0, sizeof rvms[i]);
        }
    for (int s = 0; s < NPROC; s++)
        kill_slot(s);
    reap();
}

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

#define NEED(k)                                                 \
    do {                                                        \
        if (n != (k)) {                                         \
            out("e %s takes %d arguments", name, (k));          \
            continue;                                           \
        }                                                       \
    } while (0)

/* ---- as a QEMU guest's /init (`ptfuzz crosscheck --kvm --kernel`) ---- */

static int guest_pid1;

static void write_file(const char *path, const char *val)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)!write(fd, val, strlen(val));
    close(fd);
}

/* pid 1 of a guest booted with only an initramfs, as ptfuzz-host's guest_init: the file systems, the console as a
 * raw channel, THP as crosscheck assumes it (enabled and defrag madvise, shmem never, khugepaged asleep), quiet
 * printk. */
static void guest_init(void)
{
    guest_pid1 = 1;
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
    write_file("/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs", "4000000000");
    write_file("/sys/kernel/mm/transparent_hugepage/khugepaged/alloc_sleep_millisecs", "4000000000");
    write_file("/proc/sys/kernel/printk", "1 4 1 7");
}

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
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return -1;
    char l[256];
    long long kb = -1;
    while (fgets(l, sizeof l, f))
        if (sscanf(l, "SecPageTables: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
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

int main(void)
{
    page_size = sysconf(_SC_PAGESIZE);
    if (getpid() == 1)
        guest_init();
    signal(SIGINT, SIG_IGN); /* Ctrl-C is the client's: it closes our stdin, and we clean up */
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_CHILD_SUBREAPER, 1); /* orphans of exited trace processes come back to be reaped */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fault_handler;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    static char line[4096];
    if (guest_pid1)
        out("ptfuzz-kvm ready");
    while (fgets(line, sizeof line, stdin)) {
        char *name = NULL;
        uint64_t a[6] = {0};
        int n = parse(line, &name, a, 6);
        if (n < 0) {
            out("e bad request");
            continue;
        }
        reap();
        struct rep rp;
        if (!strcmp(name, "hello")) {
            int k = open("/dev/kvm", O_RDWR | O_CLOEXEC);
            if (k < 0) {
                out("e /dev/kvm: %s", strerror(errno));
                continue;
            }
            int api = ioctl(k, KVM_GET_API_VERSION, 0), slots = ioctl(k, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
            close(k);
            struct utsname u;
            uname(&u);
            out("ok api=%d nr_memslots=%d page=%ld release=%s machine=%s guest=%d", api, slots, page_size, u.release,
                u.machine, guest_pid1);
        } else if (!strcmp(name, "host")) {
            run_host_helper();
        } else if (!strcmp(name, "secpt")) {
            out("ok secpt=%lld", sec_page_tables());
        } else if (!strcmp(name, "probe")) {
            do_probe();
        } else if (!strcmp(name, "reset")) {
            reset_all();
            out("r 0");
        } else if (!strcmp(name, "exec")) {
            NEED(1);
            if (a[0] >= NPROC) {
                out("e pid out of range");
                continue;
            }
            kill_slot((int)a[0]);
            out("r %d", spawn((int)a[0]));
        } else if (!strcmp(name, "exit")) {
            NEED(1);
            if (a[0] >= NPROC || !procs[a[0]].used) {
                out("r %d", -ESRCH);
                continue;
            }
            kill_slot((int)a[0]);
            out("r 0");
        } else if (!strcmp(name, "fork")) {
            NEED(2);
            if (a[0] >= NPROC || a[1] >= NPROC || !procs[a[0]].used) {
                out("r %d", -ESRCH);
                continue;
            }
            if (procs[a[1]].used) {
                out("r %d", -EEXIST);
                continue;
            }
            int fds[2], nf = 0;
            if (ask((int)a[0], C_FORK, NULL, 0, &rp, fds, &nf))
                continue;
            if (rp.res == 0 && nf == 1)
                adopt((int)a[1], fds[0], (pid_t)rp.v[0]);
            out("r %lld", (long long)rp.res);
        } else if (!strcmp(name, "mmap") || !strcmp(name, "munmap") || !strcmp(name, "madvise") ||
                   !strcmp(name, "fault")) {
            int mm = !strcmp(name, "mmap"), mu = !strcmp(name, "munmap"), ma = !strcmp(name, "madvise");
            NEED(mu ? 3 : 4);
            if (a[0] >= NPROC || !procs[a[0]].used) {
                out("r %d", -ESRCH);
                continue;
            }
            uint32_t op = mm ? C_MMAP : mu ? C_MUNMAP : ma ? C_MADVISE : C_FAULT;
            uint64_t len = op == C_FAULT ? 4 : a[2];
            if (a[1] < WIN_LO || a[1] >= WIN_HI || len > WIN_HI - a[1]) {
                out("e address outside [2^44, 2^46)");
                continue;
            }
            if (ma && a[3] > 3) {
                out("r %d", -EINVAL);
                continue;
            }
            if (ask((int)a[0], op, a + 1, 3, &rp, NULL, NULL) == 0)
                out("r %lld", (long long)rp.res);
        } else if (!strcmp(name, "vm_create")) {
            NEED(3);
            if (a[0] >= NVM) {
                out("e vm out of range");
                continue;
            }
            if (rvms[a[0]].used) {
                out("r %d", -EEXIST);
                continue;
            }
            if (a[1] >= NPROC || !procs[a[1]].used) {
                out("r %d", -ESRCH);
                continue;
            }
            uint64_t b[2] = {a[0], a[2]};
            int fds[2], nf = 0;
            if (ask((int)a[1], C_VM_CREATE, b, 2, &rp, fds, &nf))
                continue;
            if (rp.res <= -10000) {
                out("e vm %llu: setting up the guest failed: %s", (unsigned long long)a[0],
                    strerror((int)(-10000 - rp.res)));
                continue;
            }
            if (rp.res == 0 && nf == 2) {
                struct rvm *v = &rvms[a[0]];
                v->used = 1;
                v->owner = (int)a[1];
                v->gen = procs[a[1]].gen;
                v->vmfd = fds[0];
                v->vcpufd = fds[1];
            }
            out("r %lld", (long long)rp.res);
        } else if (!strcmp(name, "vm_destroy")) {
            NEED(1);
            if (a[0] >= NVM || !rvms[a[0]].used) {
                out("r %d", -ENOENT);
                continue;
            }
            vm_drop((int)a[0]);
            out("r 0");
        } else if (!strcmp(name, "memslot")) {
            NEED(5);
            if (a[0] >= NVM || !rvms[a[0]].used) {
                out("r %d", -ENOENT);
                continue;
            }
            struct rvm *v = &rvms[a[0]];
            if (owner_alive(v)) {
                if (ask(v->owner, C_MEMSLOT, a, 5, &rp, NULL, NULL) == 0)
                    out("r %lld", (long long)rp.res);
                continue;
            }
            struct kvm_userspace_memory_region r = {(uint32_t)a[1], 0, a[2], a[4], a[3]};
            out("r %d", ioctl(v->vmfd, KVM_SET_USER_MEMORY_REGION, &r) ? -errno : 0);
        } else if (!strcmp(name, "guest_fault")) {
            NEED(4);
            if (a[0] >= NVM || !rvms[a[0]].used) {
                out("g %d 0 0 0 none", -ENOENT);
                continue;
            }
            struct rvm *v = &rvms[a[0]];
            if (owner_alive(v)) {
                if (ask(v->owner, C_GFAULT, a, 4, &rp, NULL, NULL) == 0)
                    out("g %lld %llu %llu %llu %s", (long long)rp.res, (unsigned long long)rp.v[0],
                        (unsigned long long)rp.v[1], (unsigned long long)rp.v[2], exit_names[rp.v[3] % 7]);
                continue;
            }
            /* a foreign mm: kvm_vcpu_ioctl's check comes first */
            out("g %d 0 0 0 errno", ioctl(v->vcpufd, KVM_RUN, 0) ? -errno : 0);
        } else if (!strcmp(name, "quit")) {
            break;
        } else {
            out("e unknown request %s", name);
        }
    }
    reset_all();
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    if (guest_pid1) {
        sync();
        reboot(RB_POWER_OFF);
    }
    return 0;
}
