/* Included by both units: a header inline is inlined in each of them. */
static inline __attribute__((always_inline)) int kp_header(int x)
{
	return x * 3 + 1;
}
