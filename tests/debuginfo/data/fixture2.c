/* The second unit of the fixture: it inlines the header's kp_header too. */
#include "fixture.h"

__attribute__((noinline)) int kp_other_unit(int x)
{
	return kp_header(x) + kp_header(x + 1);
}
