/*
 * ptfuzz_kvm_ops.h: what each VM operation of a trace (vm_create, memslot, guest_fault, vm_destroy) does on a
 * real kernel through /dev/kvm, on x86_64, arm64 and s390x, shared by crosscheck --kvm's helper (ptfuzz_kvm.c,
 * which answers a line protocol) and the `ptfuzz repro-c` reproducers (which inline it after ptfuzz_ops.h), as
 * ptfuzz_ops.h is for the host operations.
 *
 * Every VM operation runs in the process that created the VM (kvm->mm == current->mm), as a request the child
 * serves (PTF_CHILD_EXTRA), while that process lives; the VM's fds are passed to the root at vm_create, so that
 * once the owner has exited or was replaced by an exec the root issues the ioctl on its copies, as any other
 * holder of the fd would, and gets what KVM gives a foreign mm (-EIO). A forked process owns no VM: it drops its
 * copies first thing (PTF_CHILD_START). The root's entry points:
 *
 *   ptf_kvm_op(name, args, stamp)   0 or -errno as the model writes results, or PTF_FAIL (ptf_err says why);
 *                                   after a guest_fault, ptf_access holds what the guest and the owner saw and
 *                                   ptf_detail says it in words
 *   ptf_kvm_reset()                 every VM's fds closed (the processes are ptfuzz_ops.h's)
 *
 * guest_fault runs the VM's one vCPU on a tiny guest whose code lies in a memslot of its own (CODE_SLOT, outside
 * the trace's 0..31) and loads (or stores STAMP) 4 bytes at gpa & ~3; RES is 0 when the access completed, -14
 * when it hit no memslot (the model's -EFAULT) and -errno when KVM_RUN failed. After a completed access the
 * owner's view of the hva is read too (HOST, PRESENT: 0 for an anonymous page it does not map), so that a
 * caller can tell whether the guest sees what the host maps. The guest per arch:
 *
 * x86_64: 32-bit protected mode, paging off (gpa = linear address), code at CODE_GPA: `mov eax,[ebx]` (or
 *   `mov [ebx],eax` with eax = STAMP), `out 0x10,eax`, `hlt`. A gpa without memslot exits to userspace as MMIO,
 *   completed with zeros, the run going on to the hlt.
 * arm64: EL1 with the MMU off (gpa = virtual address), code at 2^32 - 2 pages, the page above it in no memslot:
 *   `ldr w1,[x0]` (or `str w1,[x0]` with w1 = STAMP), then `str w1,[x2]` to that MMIO page, the exit that ends
 *   the access and carries what the guest read (or wrote). An exception in the guest goes to VBAR_EL1 (the code
 *   page + 2K), whose every vector writes x30 to the MMIO page + 0x100.
 * s390x: 64-bit mode with DAT off, code, lowcore and program-new PSW in a 1 MiB memslot at CODE_GPA (its host
 *   memory a 1 MiB-aligned anonymous mapping of the owner): `l %r3,0(%r2)` (or `st %r3,0(%r2)` with r3 = STAMP),
 *   then `diag 0,0,0x501`, which KVM hands to userspace as an instruction intercept (KVM_EXIT_S390_SIEIC,
 *   icptcode 4, as tools/testing/selftests/kvm/s390x/sync_regs_test.c's guest). A program check (an addressing
 *   exception for a gpa no memslot backs) loads the program-new PSW, which points at `diag 0,0,0x502`: -EFAULT.
 *   The prefix register points the guest's lowcore (real 0..8K) at CODE_GPA, so that the program-new PSW does
 *   not have to be written into the trace's memory: real addresses 0..8K and CODE_GPA..+8K swap (prefixing), and
 *   the guest is given the real address that reaches the trace's gpa. s390's KVM_CREATE_VM needs an mm that
 *   asked for PGSTEs at exec (s390_enable_sie: -EINVAL otherwise): a program that creates VMs is linked with
 *   `-Wl,--s390-pgste` (as QEMU is), and every process it forks inherits that.
 */
#ifndef PTFUZZ_KVM_OPS_H
#define PTFUZZ_KVM_OPS_H
#ifndef PTFUZZ_OPS_H
#error "include ptfuzz_ops.h first (PTF_CHILD_EXTRA defined as ptf_kvm_child, PTF_CHILD_START as ptf_kvm_forget)"
#endif
#include <linux/kvm.h>
#include <stddef.h>

#define NVM 16
#define NSLOT 32
#define CODE_SLOT 100

enum { C_VM_CREATE = 32, C_MEMSLOT, C_GFAULT, C_VM_CLOSE };
/* how a guest access ended (exit_names): io/hlt/mmio/exc on x86_64 and arm64, diag-501/program-check on s390x */
enum { X_NONE, X_IO, X_HLT, X_MMIO, X_ERRNO, X_OTHER, X_EXC, X_DIAG, X_PGM, X_COUNT };
static const char *const exit_names[X_COUNT] = {"none",  "io",  "hlt",      "mmio",         "errno",
                                                "other", "exc", "diag-501", "program-check"};

/* ---- in the process that owns the VM ---- */
struct cvm {
    int used, vmfd, vcpufd;
    struct kvm_run *run;
    size_t run_size;
    uint8_t *code;
    struct { int used; uint64_t gpa, hva, len; } slot[NSLOT];
};
static struct cvm cvms[NVM];
static int kvm_fd = -1;

/* ---- the guest, per arch: its code memslot (gpa, size, host memory), the vCPU's setup, one access ---- */

#if defined(__x86_64__)
#define CODE_GPA 0xfffff000ULL
#define IO_PORT 0x10

static uint64_t code_gpa(void)
{
    return CODE_GPA;
}

static size_t code_size(void)
{
    return (size_t)page_size;
}

static uint8_t *code_map(void)
{
    static const uint8_t prog[] = {
        0x8b, 0x03, 0xef, 0xf4, /* +0: mov eax,[ebx]; out dx,eax; hlt */
        [16] = 0x89, 0x03, 0xef, 0xf4, /* +16: mov [ebx],eax; out dx,eax; hlt */
    };
    uint8_t *code = mmap(NULL, code_size(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (code != MAP_FAILED)
        memcpy(code, prog, sizeof prog);
    return code;
}

static int guest_setup(struct cvm *v)
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
static int64_t guest_run(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp, uint32_t *guest, int *howp,
                         unsigned *aux)
{
    struct kvm_regs g;
    memset(&g, 0, sizeof g);
    g.rip = CODE_GPA + (write ? 16 : 0);
    g.rbx = gpa & ~3ULL;
    g.rax = write ? (uint32_t)stamp : 0;
    g.rdx = IO_PORT;
    g.rflags = 2;
    (void)aux;
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
#elif defined(__aarch64__)
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

static size_t code_size(void)
{
    return (size_t)page_size;
}

static uint8_t *code_map(void)
{
    static const uint32_t rd[] = {0xb9400001, 0xb9000041, 0x14000000}; /* ldr w1,[x0]; str w1,[x2]; b . */
    static const uint32_t wr[] = {0xb9000001, 0xb9000041, 0x14000000}; /* str w1,[x0]; str w1,[x2]; b . */
    static const uint32_t vec[] = {0xf900007e, 0x14000000};           /* str x30,[x3]; b . */
    uint8_t *code = mmap(NULL, code_size(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED)
        return code;
    memcpy(code, rd, sizeof rd);
    memcpy(code + 16, wr, sizeof wr);
    for (int i = 0; i < 16; i++)
        memcpy(code + ARM64_VEC_OFF + i * 0x80, vec, sizeof vec);
    return code;
}

static int set_reg(int vcpufd, uint64_t id, uint64_t val)
{
    struct kvm_one_reg r = {id, (uint64_t)(uintptr_t)&val};
    return ioctl(vcpufd, KVM_SET_ONE_REG, &r) ? -errno : 0;
}

static int guest_setup(struct cvm *v)
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
static void mmio_complete(struct cvm *v)
{
    v->run->immediate_exit = 1;
    if (v->run->exit_reason == KVM_EXIT_MMIO && !v->run->mmio.is_write)
        memset(v->run->mmio.data, 0, sizeof v->run->mmio.data);
    (void)ioctl(v->vcpufd, KVM_RUN, 0);
    v->run->immediate_exit = 0;
}

/* One access: RES 0 and what the guest read (or wrote), -14 for a gpa without memslot (an MMIO exit at the gpa:
 * the run stops there), -errno when KVM_RUN failed. */
static int64_t guest_run(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp, uint32_t *guest, int *howp,
                         unsigned *aux)
{
    int ret;
    (void)aux;
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
        mmio_complete(v);
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
#elif defined(__s390x__)
#define CODE_GPA 0xfff00000ULL /* 1 MiB aligned (s390 memslots are), below 4 GiB, far from a trace's usual gpas */
#define CODE_SIZE (1ULL << 20)
#define LOWCORE_SIZE 8192ULL
#define PGM_NEW_PSW 0x1d0 /* lowcore offsets (z/Architecture) */
#define PGM_INT_CODE 0x8e
#define PROG_OFF 0x2000 /* the guest's code, after the lowcore */
#define PSW_64BIT 0x0000000180000000ULL /* EA and BA: 64-bit addressing; DAT, I/O and external interrupts off */
#define DIAG_DONE 0x501
#define DIAG_PGM 0x502

static uint64_t code_gpa(void)
{
    return CODE_GPA;
}

static size_t code_size(void)
{
    return CODE_SIZE;
}

/* Its host memory 1 MiB aligned, as s390's kvm_arch_prepare_memory_region requires. */
static uint8_t *code_map(void)
{
    static const uint8_t prog[] = {
        0x58, 0x30, 0x20, 0x00, /* +0x00: l %r3,0(%r2) */
        0x83, 0x00, 0x05, 0x01, /*        diag 0,0,0x501 */
        0xa7, 0xf4, 0x00, 0x00, /*        j . */
        0x00, 0x00, 0x00, 0x00,
        0x50, 0x30, 0x20, 0x00, /* +0x10: st %r3,0(%r2) */
        0x83, 0x00, 0x05, 0x01, /*        diag 0,0,0x501 */
        0xa7, 0xf4, 0x00, 0x00, /*        j . */
        0x00, 0x00, 0x00, 0x00,
        0x83, 0x00, 0x05, 0x02, /* +0x20: diag 0,0,0x502 (the program-new PSW's target) */
        0xa7, 0xf4, 0x00, 0x00, /*        j . */
    };
    uint8_t *m = mmap(NULL, 2 * CODE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return m;
    uint8_t *a = (uint8_t *)(((uintptr_t)m + CODE_SIZE - 1) & ~(uintptr_t)(CODE_SIZE - 1));
    if (a > m)
        munmap(m, (size_t)(a - m));
    munmap(a + CODE_SIZE, (size_t)(m + 2 * CODE_SIZE - (a + CODE_SIZE)));
    memcpy(a + PROG_OFF, prog, sizeof prog);
    uint64_t psw[2] = {PSW_64BIT, CODE_GPA + PROG_OFF + 0x20};
    memcpy(a + PGM_NEW_PSW, psw, sizeof psw); /* s390 is big-endian: the PSW as the architecture stores it */
    return a;
}

static int guest_setup(struct cvm *v)
{
    v->run->s.regs.prefix = CODE_GPA;
    v->run->kvm_dirty_regs = KVM_SYNC_PREFIX;
    return 0;
}

/* The real address that reaches absolute address gpa under prefix CODE_GPA (prefixing swaps 0..8K with it). */
static uint64_t real_of(uint64_t gpa)
{
    if (gpa < LOWCORE_SIZE)
        return CODE_GPA + gpa;
    if (gpa >= CODE_GPA && gpa < CODE_GPA + LOWCORE_SIZE)
        return gpa - CODE_GPA;
    return gpa;
}

static int diag_exit(const struct kvm_run *run, unsigned code)
{
    return run->exit_reason == KVM_EXIT_S390_SIEIC && run->s390_sieic.icptcode == 4 &&
           (run->s390_sieic.ipa >> 8) == 0x83 && (run->s390_sieic.ipb >> 16) == code;
}

/* One access: RES 0 and what the guest read (or wrote), -14 after a program check (aux: its interruption
 * code), -errno when KVM_RUN failed. */
static int64_t guest_run(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp, uint32_t *guest, int *howp,
                         unsigned *aux)
{
    struct kvm_regs g;
    memset(&g, 0, sizeof g);
    g.gprs[2] = real_of(gpa & ~3ULL);
    g.gprs[3] = write ? (uint32_t)stamp : 0;
    if (ioctl(v->vcpufd, KVM_SET_REGS, &g)) {
        *howp = X_ERRNO;
        return -errno;
    }
    v->run->psw_mask = PSW_64BIT;
    v->run->psw_addr = CODE_GPA + PROG_OFF + (write ? 0x10 : 0);
    for (int i = 0; i < 8; i++) {
        if (ioctl(v->vcpufd, KVM_RUN, 0)) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            *howp = X_ERRNO;
            return -errno;
        }
        if (diag_exit(v->run, DIAG_DONE)) {
            *howp = X_DIAG;
            if (!ioctl(v->vcpufd, KVM_GET_REGS, &g))
                *guest = (uint32_t)g.gprs[3];
            return 0;
        }
        if (diag_exit(v->run, DIAG_PGM)) {
            *howp = X_PGM;
            *aux = (unsigned)v->code[PGM_INT_CODE] << 8 | v->code[PGM_INT_CODE + 1];
            return -EFAULT;
        }
        *howp = X_OTHER;
        return -10000 - (int64_t)v->run->exit_reason;
    }
    *howp = X_OTHER;
    return -10000;
}
#else
#error "ptfuzz_kvm_ops.h: VM operations are defined for x86_64, arm64 and s390x"
#endif

static void vm_close(struct cvm *v)
{
    if (!v->used)
        return;
    if (v->run)
        munmap(v->run, v->run_size);
    if (v->code)
        munmap(v->code, code_size());
    if (v->vcpufd >= 0)
        close(v->vcpufd);
    close(v->vmfd);
    memset(v, 0, sizeof *v);
}

/* The code memslot, the vCPU and its kvm_run, then the arch's vCPU setup. */
static int vm_setup(struct cvm *v)
{
    uint8_t *code = code_map();
    if (code == MAP_FAILED)
        return -errno;
    v->code = code;
    struct kvm_userspace_memory_region r = {CODE_SLOT, 0, code_gpa(), code_size(), (uint64_t)(uintptr_t)code};
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
    return guest_setup(v);
}

/* A VM of type TYPE with its vCPU (kvm_fd opened on first use): 0, -errno of KVM_CREATE_VM, or -10000-ERR when
 * the VM exists but cannot run guests (a failure of the program, not an operation result). */
static int vm_create(struct cvm *v, uint64_t type)
{
    vm_close(v);
    if (kvm_fd < 0 && (kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0)
        return -errno;
    v->vmfd = ioctl(kvm_fd, KVM_CREATE_VM, (unsigned long)type);
    if (v->vmfd < 0)
        return -errno;
    v->used = 1;
    v->vcpufd = -1;
    int ret = vm_setup(v);
    if (ret) {
        vm_close(v);
        return -10000 + ret;
    }
    return 0;
}

/* KVM_SET_USER_MEMORY_REGION (flags 0), remembered for guest_access's look at the host's side. */
static int vm_memslot(struct cvm *v, uint64_t slot, uint64_t gpa, uint64_t hva, uint64_t len)
{
    struct kvm_userspace_memory_region m = {(uint32_t)slot, 0, gpa, len, hva};
    if (ioctl(v->vmfd, KVM_SET_USER_MEMORY_REGION, &m))
        return -errno;
    if (slot < NSLOT) {
        v->slot[slot].used = len != 0;
        v->slot[slot].gpa = gpa;
        v->slot[slot].hva = hva;
        v->slot[slot].len = len;
    }
    return 0;
}

/* What this process maps at hva, without faulting anything in: (present, value). */
static void host_value(uint64_t hva, unsigned *present, uint32_t *val)
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

/* One guest access and, when it completed, what the owner maps at the hva behind the gpa. */
struct ptf_access {
    long long res;
    uint32_t guest, host;
    unsigned present, aux; /* aux: s390's program interruption code */
    int how;
};

static struct ptf_access guest_access(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp)
{
    struct ptf_access a = {0, 0, 0, 0, 0, X_NONE};
    a.res = guest_run(v, gpa, write, stamp, &a.guest, &a.how, &a.aux);
    if (a.res == 0)
        for (int s = 0; s < NSLOT; s++)
            if (v->slot[s].used && gpa >= v->slot[s].gpa && gpa - v->slot[s].gpa < v->slot[s].len)
                host_value((v->slot[s].hva + (gpa - v->slot[s].gpa)) & ~3ULL, &a.present, &a.host);
    return a;
}

/* The KVM requests a trace process serves (PTF_CHILD_EXTRA); 0 when it has replied. The VM index travels in the
 * request's pad. vm_create's reply carries the VM's and the vCPU's fds; guest_fault's is
 * `g RES GUEST HOST PRESENT HOW AUX`. */
static int ptf_kvm_child(const struct req *r)
{
    if (r->op < C_VM_CREATE || r->op > C_VM_CLOSE || r->pad >= NVM)
        return -1;
    struct cvm *v = &cvms[r->pad];
    switch (r->op) {
    case C_VM_CREATE: {
        int ret = vm_create(v, r->a[0]), fds[2] = {v->vmfd, v->vcpufd};
        char b[32];
        int n = snprintf(b, sizeof b, "r %d\n", ret);
        send_fds(b, (size_t)n, fds, ret ? 0 : 2);
        return 0;
    }
    case C_MEMSLOT:
        reply_r(v->used ? vm_memslot(v, r->a[0], r->a[1], r->a[2], r->a[3]) : -ENOENT);
        return 0;
    case C_GFAULT: {
        if (!v->used) {
            reply_r(-ENOENT);
            return 0;
        }
        struct ptf_access a = guest_access(v, r->a[0], r->a[1], r->a[2]);
        char b[128];
        int n = snprintf(b, sizeof b, "g %lld %u %u %u %d %u\n", a.res, a.guest, a.host, a.present, a.how, a.aux);
        if (write_all(chan, b, (size_t)n))
            _exit(0);
        return 0;
    }
    case C_VM_CLOSE:
        vm_close(v);
        reply_r(0);
        return 0;
    }
    return -1;
}

/* PTF_CHILD_START: a process starts owning no VM; a forked one drops its copies of the parent's (the fds, the
 * kvm_run and code mappings) before its fds are closed, and opens /dev/kvm anew when it creates one. */
static void ptf_kvm_forget(void)
{
    for (int i = 0; i < NVM; i++)
        vm_close(&cvms[i]);
    if (kvm_fd >= 0)
        close(kvm_fd);
    kvm_fd = -1;
}

/* ---- in the root: which process owns each VM, and the root's copies of its fds ---- */
static struct {
    int used, slot, vmfd, vcpufd;
    unsigned gen; /* the owner's generation: an exec replaces the process in the slot */
} rvms[NVM];
static struct ptf_access ptf_access;
static char ptf_detail[256];

static int kvm_send(int s, uint32_t op, uint32_t vm, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
    struct req r = {op, vm, {a0, a1, a2, a3}};
    return send(procs[s].sock, &r, sizeof r, MSG_NOSIGNAL) == (ssize_t)sizeof r ? 0 : -1;
}

static void rvm_drop(int vm)
{
    close(rvms[vm].vmfd);
    close(rvms[vm].vcpufd);
    memset(&rvms[vm], 0, sizeof rvms[vm]);
}

__attribute__((unused)) static void ptf_kvm_reset(void)
{
    for (int i = 0; i < NVM; i++)
        if (rvms[i].used)
            rvm_drop(i);
}

static long long kvm_create(int vm, uint64_t pid, uint64_t type)
{
    if (rvms[vm].used)
        return -EEXIST;
    if (pid >= NPROC || !procs[pid].used)
        return -ESRCH;
    int s = (int)pid, fds[2], nfds = 0;
    if (kvm_send(s, C_VM_CREATE, (uint32_t)vm, type, 0, 0, 0))
        return lost(s, "vm_create");
    long long r = relay_result_fds(s, "vm_create", fds, &nfds);
    if (r != PTF_FAIL && r <= -10000)
        r = ptf_fail("vm %d: setting up the guest failed: %s", vm, strerror((int)(-10000 - r)));
    if (r == 0 && nfds == 2) {
        rvms[vm].used = 1, rvms[vm].slot = s, rvms[vm].gen = procs[s].gen;
        rvms[vm].vmfd = fds[0], rvms[vm].vcpufd = fds[1];
        return 0;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    return r;
}

/* guest_fault in the owner: its `g` reply into ptf_access. */
static long long kvm_guest_fault(int s, int vm, const uint64_t *a, uint64_t stamp)
{
    if (kvm_send(s, C_GFAULT, (uint32_t)vm, a[1], a[2], stamp, 0))
        return lost(s, "guest_fault");
    long long r = relay(s, "guest_fault");
    if (r)
        return r;
    struct ptf_access *g = &ptf_access;
    if (!strncmp(outbuf, "r ", 2)) /* no such VM in the owner */
        return g->res = strtoll(outbuf + 2, NULL, 10);
    if (sscanf(outbuf, "g %lld %u %u %u %d %u", &g->res, &g->guest, &g->host, &g->present, &g->how, &g->aux) != 6 ||
        g->how < 0 || g->how >= X_COUNT)
        return ptf_fail("process %d: guest_fault: malformed reply %.64s", s, outbuf);
    return g->res;
}

static void say_access(void)
{
    const struct ptf_access *g = &ptf_access;
    if (g->how == X_PGM)
        snprintf(ptf_detail, sizeof ptf_detail, "exit=%s pgm=%#x", exit_names[g->how], g->aux);
    else if (g->res == 0)
        snprintf(ptf_detail, sizeof ptf_detail, "exit=%s guest=%#x host=%#x%s", exit_names[g->how], g->guest,
                 g->host, g->present ? "" : " (not mapped)");
    else
        snprintf(ptf_detail, sizeof ptf_detail, "exit=%s", exit_names[g->how]);
}

/* One VM operation of a trace: vm_create VM PID TYPE, memslot VM SLOT GPA HVA LEN, guest_fault VM GPA WRITE
 * (a write stores stamp), vm_destroy VM. The bookkeeping answers are the model's: -2 no such VM, -3 no such
 * process, -17 the VM exists; once the owner's mm is gone (exit or exec) memslot and guest_fault are the root's
 * ioctls on its copies of the fds (-5: a foreign mm). */
static long long ptf_kvm_op(const char *name, const uint64_t *a, uint64_t stamp)
{
    int gf = !strcmp(name, "guest_fault");
    ptf_detail[0] = 0;
    memset(&ptf_access, 0, sizeof ptf_access);
    if (!strcmp(name, "vm_create")) {
        if (a[0] >= NVM)
            return ptf_fail("vm_create: vm %llu is not 0..%d", (unsigned long long)a[0], NVM - 1);
        return kvm_create((int)a[0], a[1], a[2]);
    }
    if (!gf && strcmp(name, "memslot") && strcmp(name, "vm_destroy"))
        return ptf_fail("unknown operation %.64s", name);
    if (a[0] >= NVM || !rvms[a[0]].used)
        return ptf_access.res = -ENOENT;
    int vm = (int)a[0], s = rvms[vm].slot, alive = procs[s].used && procs[s].gen == rvms[vm].gen;
    long long r;
    if (!strcmp(name, "vm_destroy")) {
        r = 0;
        if (alive && kvm_send(s, C_VM_CLOSE, (uint32_t)vm, 0, 0, 0, 0))
            r = lost(s, name);
        else if (alive)
            r = relay_result(s, name);
        rvm_drop(vm);
        return r;
    }
    if (!strcmp(name, "memslot")) {
        if (alive && kvm_send(s, C_MEMSLOT, (uint32_t)vm, a[1], a[2], a[3], a[4]))
            return lost(s, name);
        if (alive)
            return relay_result(s, name);
        struct kvm_userspace_memory_region m = {(uint32_t)a[1], 0, a[2], a[4], a[3]};
        return err(ioctl(rvms[vm].vmfd, KVM_SET_USER_MEMORY_REGION, &m));
    }
    if (alive) {
        r = kvm_guest_fault(s, vm, a, stamp);
    } else { /* a foreign mm: kvm_vcpu_ioctl's check comes first */
        r = ptf_access.res = err(ioctl(rvms[vm].vcpufd, KVM_RUN, 0));
        ptf_access.how = X_ERRNO;
    }
    if (r != PTF_FAIL)
        say_access();
    return r;
}
#endif /* PTFUZZ_KVM_OPS_H */
