/*
 * ptfuzz_kvm_ops.h: what each VM operation of a trace (vm_create, memslot, guest_fault, vm_destroy) does on a
 * real kernel through /dev/kvm, for `ptfuzz repro-c` reproducers (inlined there, after ptfuzz_ops.h). s390x only
 * for now: x86_64's operations live in ptfuzz_kvm.c and move here later, so that crosscheck --kvm and the
 * reproducers share them as the host operations are shared.
 *
 * Every VM operation runs in the process that created the VM (kvm->mm == current->mm), as a request the child
 * serves (PTF_CHILD_EXTRA). The root's entry point:
 *
 *   ptf_kvm_op(name, args, stamp)   0 or -errno as the model writes results, or PTF_FAIL (ptf_err says why);
 *                                   after a guest_fault, ptf_detail says what the guest saw
 *
 * guest_fault runs the VM's one vCPU on a tiny guest in 64-bit mode with DAT off, whose code, lowcore and
 * program-new PSW lie in a memslot of their own (CODE_SLOT at CODE_GPA, outside the trace's slots 0..31, its
 * host memory a 1 MiB-aligned anonymous mapping of the owner): `l %r3,0(%r2)` (or `st %r3,0(%r2)` with r3 =
 * STAMP), then `diag 0,0,0x501`, which KVM hands to userspace as an instruction intercept (KVM_EXIT_S390_SIEIC,
 * icptcode 4, as tools/testing/selftests/kvm/s390x/sync_regs_test.c's guest). A program check (an addressing
 * exception for a gpa no memslot backs) loads the program-new PSW, which points at `diag 0,0,0x502`: -EFAULT,
 * the model's result for a gpa without a memslot; a KVM_RUN that fails gives -errno.
 *
 * The prefix register points the guest's lowcore (real 0..8K) at CODE_GPA, so that the program-new PSW does not
 * have to be written into the trace's memory: real addresses 0..8K and CODE_GPA..+8K swap (prefixing), and the
 * guest is given the real address that reaches the trace's gpa.
 *
 * s390's KVM_CREATE_VM needs an mm that asked for PGSTEs at exec (s390_enable_sie: -EINVAL otherwise): a
 * reproducer that creates VMs is linked with `-Wl,--s390-pgste` (as QEMU is), and every process it forks
 * inherits that.
 */
#ifndef PTFUZZ_KVM_OPS_H
#define PTFUZZ_KVM_OPS_H
#ifndef PTFUZZ_OPS_H
#error "include ptfuzz_ops.h first (with PTF_CHILD_EXTRA defined as ptf_kvm_child)"
#endif
#if !defined(__s390x__)
#error "ptfuzz_kvm_ops.h: only s390x's VM operations are shared yet (x86_64's are in ptfuzz_kvm.c)"
#endif
#include <linux/kvm.h>

#define NVM 16
#define NSLOT 32
#define CODE_GPA 0xfff00000ULL /* 1 MiB aligned (s390 memslots are), below 4 GiB, far from a trace's usual gpas */
#define CODE_SIZE (1ULL << 20)
#define CODE_SLOT 100
#define LOWCORE_SIZE 8192ULL
#define PGM_NEW_PSW 0x1d0   /* lowcore offsets (z/Architecture) */
#define PGM_INT_CODE 0x8e
#define PROG_OFF 0x2000     /* the guest's code, after the lowcore */
#define PSW_64BIT 0x0000000180000000ULL /* EA and BA: 64-bit addressing; DAT, I/O and external interrupts off */
#define DIAG_DONE 0x501
#define DIAG_PGM 0x502

enum { C_VM_CREATE = 32, C_MEMSLOT, C_GFAULT, C_VM_CLOSE };
enum { X_NONE, X_DONE, X_PGM, X_ERRNO, X_OTHER };
static const char *const exit_names[] = {"none", "diag-501", "program-check", "errno", "other"};

/* ---- in the process that owns the VM ---- */
struct cvm {
    int used, vmfd, vcpufd;
    struct kvm_run *run;
    size_t run_size;
    uint8_t *code;
};
static struct cvm cvms[NVM];
static int kvm_fd = -1;

static void vm_close(struct cvm *v)
{
    if (!v->used)
        return;
    if (v->run)
        munmap(v->run, v->run_size);
    if (v->code)
        munmap(v->code, CODE_SIZE);
    if (v->vcpufd >= 0)
        close(v->vcpufd);
    close(v->vmfd);
    memset(v, 0, sizeof *v);
}

/* The code memslot (its host memory 1 MiB aligned, as s390's kvm_arch_prepare_memory_region requires), the
 * vCPU and its kvm_run. */
static int vm_setup(struct cvm *v)
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
        return -errno;
    uint8_t *a = (uint8_t *)(((uintptr_t)m + CODE_SIZE - 1) & ~(uintptr_t)(CODE_SIZE - 1));
    if (a > m)
        munmap(m, (size_t)(a - m));
    munmap(a + CODE_SIZE, (size_t)(m + 2 * CODE_SIZE - (a + CODE_SIZE)));
    v->code = a;
    memcpy(a + PROG_OFF, prog, sizeof prog);
    uint64_t psw[2] = {PSW_64BIT, CODE_GPA + PROG_OFF + 0x20};
    memcpy(a + PGM_NEW_PSW, psw, sizeof psw); /* s390 is big-endian: the PSW as the architecture stores it */
    struct kvm_userspace_memory_region r = {CODE_SLOT, 0, CODE_GPA, CODE_SIZE, (uint64_t)(uintptr_t)a};
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
    v->run->s.regs.prefix = CODE_GPA;
    v->run->kvm_dirty_regs = KVM_SYNC_PREFIX;
    return 0;
}

/* "r RES", or "r -10000-ERR" when the VM exists but cannot run guests (a failure of the program). */
static void vm_create_child(struct cvm *v, uint64_t type)
{
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
        vm_close(v);
        reply_r(-10000 + ret);
        return;
    }
    reply_r(0);
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

/* "g RES VALUE HOW PGM": the guest's load or store of 4 bytes at gpa & ~3, how the run ended and the program
 * interruption code (0 without a program check). */
static void guest_fault_child(struct cvm *v, uint64_t gpa, uint64_t write, uint64_t stamp)
{
    struct kvm_regs g;
    memset(&g, 0, sizeof g);
    g.gprs[2] = real_of(gpa & ~3ULL);
    g.gprs[3] = write ? (uint32_t)stamp : 0;
    long long res = 0;
    int how = X_NONE;
    unsigned pgm = 0;
    if (ioctl(v->vcpufd, KVM_SET_REGS, &g)) {
        res = -errno;
        how = X_ERRNO;
    }
    v->run->psw_mask = PSW_64BIT;
    v->run->psw_addr = CODE_GPA + PROG_OFF + (write ? 0x10 : 0);
    for (int i = 0; i < 8 && how == X_NONE; i++) {
        if (ioctl(v->vcpufd, KVM_RUN, 0)) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            res = -errno;
            how = X_ERRNO;
            break;
        }
        struct kvm_run *run = v->run;
        if (run->exit_reason == KVM_EXIT_S390_SIEIC && run->s390_sieic.icptcode == 4 &&
            (run->s390_sieic.ipa >> 8) == 0x83 && (run->s390_sieic.ipb >> 16) == DIAG_DONE) {
            how = X_DONE;
        } else if (run->exit_reason == KVM_EXIT_S390_SIEIC && run->s390_sieic.icptcode == 4 &&
                   (run->s390_sieic.ipa >> 8) == 0x83 && (run->s390_sieic.ipb >> 16) == DIAG_PGM) {
            how = X_PGM;
            res = -EFAULT;
            pgm = (unsigned)v->code[PGM_INT_CODE] << 8 | v->code[PGM_INT_CODE + 1];
        } else {
            how = X_OTHER;
            res = -10000 - (long long)run->exit_reason;
        }
    }
    if (how == X_NONE)
        how = X_OTHER, res = -10000;
    uint32_t val = 0;
    if (how == X_DONE && !ioctl(v->vcpufd, KVM_GET_REGS, &g))
        val = (uint32_t)g.gprs[3];
    char b[128];
    int n = snprintf(b, sizeof b, "g %lld %u %d %u\n", res, val, how, pgm);
    if (write_all(chan, b, (size_t)n))
        _exit(0);
}

/* The KVM requests a trace process serves (PTF_CHILD_EXTRA); 0 when it has replied. The VM index travels
 * in the request's pad. */
static int ptf_kvm_child(const struct req *r)
{
    if (r->op < C_VM_CREATE || r->op > C_VM_CLOSE || r->pad >= NVM)
        return -1;
    struct cvm *v = &cvms[r->pad];
    switch (r->op) {
    case C_VM_CREATE:
        vm_create_child(v, r->a[0]);
        return 0;
    case C_MEMSLOT: {
        struct kvm_userspace_memory_region m = {(uint32_t)r->a[0], 0, r->a[1], r->a[3], r->a[2]};
        reply_r(v->used ? err(ioctl(v->vmfd, KVM_SET_USER_MEMORY_REGION, &m)) : -ENOENT);
        return 0;
    }
    case C_GFAULT:
        if (!v->used) {
            reply_r(-ENOENT);
            return 0;
        }
        guest_fault_child(v, r->a[0], r->a[1], r->a[2]);
        return 0;
    case C_VM_CLOSE:
        vm_close(v);
        reply_r(0);
        return 0;
    }
    return -1;
}

/* ---- in the root: which process owns each VM ---- */
static struct {
    int used, slot;
    pid_t ospid; /* the owner's real pid: an exec replaces the process in the slot */
} rvms[NVM];
static char ptf_detail[256];

static int kvm_send(int s, uint32_t op, uint32_t vm, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
    struct req r = {op, vm, {a0, a1, a2, a3}};
    return send(procs[s].sock, &r, sizeof r, MSG_NOSIGNAL) == (ssize_t)sizeof r ? 0 : -1;
}

/* One VM operation of a trace: vm_create VM PID TYPE, memslot VM SLOT GPA HVA LEN, guest_fault VM GPA WRITE
 * (a write stores stamp), vm_destroy VM. The bookkeeping answers are the model's: -2 no such VM, -3 no such
 * process, -17 the VM exists, -5 for memslot and guest_fault once the owner's mm is gone (exit or exec). */
static long long ptf_kvm_op(const char *name, const uint64_t *a, uint64_t stamp)
{
    ptf_detail[0] = 0;
    if (a[0] >= NVM)
        return ptf_fail("%s: vm %llu is not 0..%d", name, (unsigned long long)a[0], NVM - 1);
    int vm = (int)a[0];
    if (!strcmp(name, "vm_create")) {
        if (rvms[vm].used)
            return -EEXIST;
        if (a[1] >= NPROC || !procs[a[1]].used)
            return -ESRCH;
        int s = (int)a[1];
        if (kvm_send(s, C_VM_CREATE, (uint32_t)vm, a[2], 0, 0, 0))
            return lost(s, name);
        long long r = relay_result(s, name);
        if (r != PTF_FAIL && r <= -10000)
            return ptf_fail("vm_create: the VM exists but its vCPU cannot be set up: %s", strerror((int)(-10000 - r)));
        if (r == 0)
            rvms[vm].used = 1, rvms[vm].slot = s, rvms[vm].ospid = procs[s].ospid;
        return r;
    }
    if (!rvms[vm].used)
        return -ENOENT;
    int s = rvms[vm].slot, alive = procs[s].used && procs[s].ospid == rvms[vm].ospid;
    if (!strcmp(name, "vm_destroy")) {
        rvms[vm].used = 0;
        if (!alive)
            return 0; /* its fds went with the owner */
        if (kvm_send(s, C_VM_CLOSE, (uint32_t)vm, 0, 0, 0, 0))
            return lost(s, name);
        return relay_result(s, name);
    }
    if (!alive)
        return -EIO;
    if (!strcmp(name, "memslot")) {
        if (kvm_send(s, C_MEMSLOT, (uint32_t)vm, a[1], a[2], a[3], a[4]))
            return lost(s, name);
        return relay_result(s, name);
    }
    if (!strcmp(name, "guest_fault")) {
        if (kvm_send(s, C_GFAULT, (uint32_t)vm, a[1], a[2], stamp, 0))
            return lost(s, name);
        long long r = relay(s, name);
        if (r)
            return r;
        long long res;
        unsigned val, pgm;
        int how;
        if (sscanf(outbuf, "g %lld %u %d %u", &res, &val, &how, &pgm) != 4 || how < 0 || how > X_OTHER)
            return ptf_fail("process %d: guest_fault: malformed reply %.64s", s, outbuf);
        if (how == X_OTHER)
            return ptf_fail("guest_fault: the vCPU stopped unexpectedly (exit reason %lld)", -10000 - res);
        if (how == X_PGM)
            snprintf(ptf_detail, sizeof ptf_detail, "exit=%s pgm=%#x", exit_names[how], pgm);
        else
            snprintf(ptf_detail, sizeof ptf_detail, "exit=%s guest=%#x", exit_names[how], val);
        return res;
    }
    return ptf_fail("unknown operation %.64s", name);
}
#endif /* PTFUZZ_KVM_OPS_H */
