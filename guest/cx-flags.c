// bb-cx-flags: checks that cmpxchg16b and cmpxchg8b leave sane EFLAGS
// (qemu-patches 0008). Run by the guest's bb.role=cx-flags.
//
// The sequence leaves the emulator's lazily computed flags in the state that
// QEMU 7.2 got wrong: popf ends a translation block with the flags stored
// "as they are", then an add puts a pointer-like operand in the place those
// flags are kept (a memory load after it makes QEMU write that place back
// to the CPU state), then cmpxchg. Before the fix the cmpxchg helpers took
// that operand for the flags, and pushf showed its bits (reserved bits, ID,
// VIF) as EFLAGS. The same as the SLUB allocator's fast path in Linux, where
// the popf is an interrupt's return.
//
// Prints "BB-CX-FLAGS-OK" or "BB-CX-FLAGS-BAD <which> flags=0x..." and exits
// 0 or 1. No libc: built with -nostdlib -static (guest/build-guest.sh).

#include <stdint.h>

static long SysWrite(const char* s, unsigned long n) {
  long r;
  __asm__ volatile("syscall"
                   : "=a"(r)
                   : "a"(1), "D"(1), "S"(s), "d"(n)
                   : "rcx", "r11", "memory");
  return r;
}

static void __attribute__((noreturn)) SysExit(int code) {
  __asm__ volatile("syscall" : : "a"(60), "D"(code) : "rcx", "r11", "memory");
  for (;;) {
  }
}

static void Print(const char* s) {
  unsigned long n = 0;
  while (s[n]) ++n;
  SysWrite(s, n);
}

static void PrintHex(uint64_t v) {
  char buf[19] = "0x";
  for (int i = 0; i < 16; ++i) buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
  buf[18] = 0;
  Print(buf);
}

static uint64_t slot16[2] __attribute__((aligned(16)));
static uint64_t slot8 __attribute__((aligned(8)));

// The arithmetic status flags (CF PF AF ZF SF OF) may be anything the add
// and cmpxchg left; apart from them only bit 1 (always set) and IF may be.
static const uint64_t kStatus = 0x8d5;
static const uint64_t kZf = 0x40;

// pushf's result after popf, add, a load and `insn` on `mem` (which holds
// 0, as does EDX:EAX, so the compare succeeds and stores ECX:EBX = 0:1).
#define FLAGS_AFTER(insn, mem, operand)                                    \
  ({                                                                        \
    uint64_t flags_, sum_ = 0;                                              \
    __asm__ volatile(                                                       \
        "pushq $0x202\n\t"                                                  \
        "popfq\n\t"                                                         \
        "add %[op], %[sum]\n\t"                                             \
        "movq %[slot], %%rax\n\t"                                           \
        "xor %%eax, %%eax\n\t"                                              \
        "xor %%edx, %%edx\n\t"                                              \
        "mov $1, %%ebx\n\t"                                                 \
        "xor %%ecx, %%ecx\n\t" insn " %[slot]\n\t"                         \
        "pushfq\n\t"                                                        \
        "popq %[flags]\n\t"                                                 \
        : [flags] "=r"(flags_), [sum] "+r"(sum_), [slot] "+m"(mem)          \
        : [op] "r"(operand)                                                 \
        : "rax", "rbx", "rcx", "rdx", "cc", "memory");                      \
    flags_;                                                                 \
  })

static int Check(const char* which, uint64_t flags, int stored) {
  // The compare succeeds (memory held 0 = EDX:EAX), so ZF is set and the
  // slot then holds ECX:EBX = 0:1.
  if ((flags & ~kStatus) == 0x202 && (flags & kZf) && stored) return 1;
  Print("BB-CX-FLAGS-BAD ");
  Print(which);
  Print(" flags=");
  PrintHex(flags);
  Print(stored ? "\n" : " (not stored)\n");
  return 0;
}

void _start(void) {
  // DF (bit 10) and TF (bit 8) are clear in the operand, so that wrong
  // flags cannot single-step or reverse string operations in this program
  // before it prints; its reserved bits 24-31, ID and VIF show them.
  const uint64_t operand = 0xffff8c9dc1280080ull;
  slot16[0] = slot16[1] = 0;
  uint64_t flags = FLAGS_AFTER("cmpxchg16b", slot16, operand);
  int ok = Check("cmpxchg16b", flags, slot16[0] == 1 && slot16[1] == 0);
  slot8 = 0;
  flags = FLAGS_AFTER("cmpxchg8b", slot8, operand);
  ok &= Check("cmpxchg8b", flags, slot8 == 1);
  if (ok) Print("BB-CX-FLAGS-OK\n");
  SysExit(ok ? 0 : 1);
}
