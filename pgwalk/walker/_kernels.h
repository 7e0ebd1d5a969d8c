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

/* folio_pte_batch_flags' compare: the n in [1, max_nr] such that every
 * pte[i], 0 < i < n, equals base + i pages under keep (base = pte[0] & keep,
 * whose PFN field the caller has checked does not overflow within max_nr
 * pages); *acc gets the OR of pte[0..n).  Blocks of 16 are compared with
 * no early exit, four entries to a vector (GCC/clang vector extensions: two
 * SSE2 halves in the baseline build, one AVX2 register in its clone); the
 * block that differs is searched entry by entry. */
#if defined(__GNUC__)
typedef uint64_t pgw_u64x4 __attribute__((vector_size(32)));
#endif

PGW_CLONES static int pgw_pte_batch(const uint64_t *__restrict pte, int max_nr, uint64_t keep,
                                    uint64_t *__restrict acc)
{
    const uint64_t base = pte[0] & keep;
    uint64_t a = pte[0], v;
    int nr = 1;
#if defined(__GNUC__)
    const pgw_u64x4 kv = {keep, keep, keep, keep};
    const pgw_u64x4 four = {4 << 12, 4 << 12, 4 << 12, 4 << 12};
    pgw_u64x4 e, x, bad, chunk, av = {0, 0, 0, 0};
    int j;

    while (nr + 16 <= max_nr) {
        const uint64_t b0 = base + ((uint64_t)nr << 12);
        e = (pgw_u64x4){b0, b0 + (1 << 12), b0 + (2 << 12), b0 + (3 << 12)};
        bad = (pgw_u64x4){0, 0, 0, 0};
        chunk = bad;
        for (j = 0; j < 4; j++) {
            memcpy(&x, pte + nr + 4 * j, sizeof(x));
            bad |= (x & kv) ^ e;
            chunk |= x;
            e += four;
        }
        if (bad[0] | bad[1] | bad[2] | bad[3])
            break;
        av |= chunk;
        nr += 16;
    }
    a |= av[0] | av[1] | av[2] | av[3];
#endif
    while (nr < max_nr) {
        v = pte[nr];
        if ((v & keep) != base + ((uint64_t)nr << 12))
            break;
        a |= v;
        nr++;
    }
    *acc = a;
    return nr;
}

/* The index of the first of pte[0..n) with a bit outside ignore set (a PTE
 * that is not none), or n; 16 at a time, vectorised as above. */
PGW_CLONES static int pgw_first_not_none(const uint64_t *__restrict pte, int n, uint64_t ignore)
{
    const uint64_t keep = ~ignore;
    int i = 0;
#if defined(__GNUC__)
    const pgw_u64x4 kv = {keep, keep, keep, keep};
    pgw_u64x4 x, any;
    int j;

    while (i + 16 <= n) {
        any = (pgw_u64x4){0, 0, 0, 0};
        for (j = 0; j < 4; j++) {
            memcpy(&x, pte + i + 4 * j, sizeof(x));
            any |= x & kv;
        }
        if (any[0] | any[1] | any[2] | any[3])
            break;
        i += 16;
    }
#endif
    while (i < n && !(pte[i] & keep))
        i++;
    return i;
}

#endif
