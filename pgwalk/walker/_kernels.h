/* pgwalk: small loops over raw table memory, written in C so the compiler
 * knows the table and the output do not overlap (restrict) and vectorises
 * them; Cython cannot say restrict. */
#ifndef PGWALK_KERNELS_H
#define PGWALK_KERNELS_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
/* built for the baseline and for AVX2, chosen when the module is loaded */
#  define PGW_CLONES __attribute__((target_clones("avx2", "default"), noinline))
#else
#  define PGW_CLONES
#endif

/* out[i] = 1 if pte[i] has any bit of mask set, else 0 (mincore's byte). */
PGW_CLONES static void pgw_any_bits_u8(const uint64_t *__restrict pte, uint8_t *__restrict out,
                                   int n, uint64_t mask)
{
    int i;
    for (i = 0; i < n; i++)
        out[i] = (pte[i] & mask) != 0;
}

/* live[i] = work[i] where work[i] differs from snap[i] (what a callback
 * changed in its copy of the slots); other slots are not written. */
static inline void pgw_store_changed(uint64_t *__restrict live, const uint64_t *__restrict work,
                                     const uint64_t *__restrict snap, int n)
{
    int i;
    if (memcmp(work, snap, (size_t)n * sizeof(uint64_t)) == 0)
        return;                             /* the common case: nothing written */
    for (i = 0; i < n; i++)
        if (work[i] != snap[i])
            live[i] = work[i];
}

#endif
