/*
 * Fixture for tests/debuginfo: one function per state of the DWARF check
 * (probes/debuginfo.py). Built by build.sh into fixture-dwarf5.elf and
 * fixture-dwarf4.elf; the tests find the expected lines in this file.
 */
#include "fixture.h"

#define NOINLINE __attribute__((noinline))

volatile int sink;

struct kp_pair {
	int used;
	int unused[15];
};

/* out-of-line, never inlined */
NOINLINE int kp_outline(int x)
{
	sink = x;
	return x + 1;
}

/* inlined only: no symbol, three call sites */
static inline __attribute__((always_inline)) int kp_inlined(int x)
{
	sink += x;
	return x * 2;
}

/* out-of-line (external) and inlined into its two callers in this unit */
int kp_both(int x);
__attribute__((always_inline)) inline int kp_both(int x)
{
	sink ^= x;
	return x - 1;
}

/* only a compiler copy: IPA-SRA passes the one field it reads (.isra) */
static NOINLINE int kp_copy(struct kp_pair *p)
{
	sink = p->used;
	return p->used * 5;
}

/* declared, never defined: a weak reference, no symbol */
extern int kp_declared_only(int x) __attribute__((weak));

extern int kp_asm(int x);
extern NOINLINE int kp_other_unit(int x);

NOINLINE int kp_caller_a(int x)
{
	return kp_inlined(x) + kp_both(x) + kp_header(x);
}

NOINLINE int kp_caller_b(int x)
{
	struct kp_pair p = { .used = x };

	return kp_inlined(x + 1) + kp_both(x + 2) + kp_copy(&p);
}

void _start(void)
{
	struct kp_pair p = { .used = 3 };
	int r = kp_outline(1) + kp_caller_a(2) + kp_caller_b(3) + kp_inlined(4) + kp_copy(&p);

	if (kp_declared_only)
		r += kp_declared_only(r);
	r += kp_asm(r) + kp_other_unit(r);
	sink = r;
	for (;;)
		;
}
