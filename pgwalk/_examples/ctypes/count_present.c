/* A pte_entry slot in plain C: count present PTEs into *ctx.
 * Signature (pgwalk "entry"): int (uint64_t *, uint64_t, uint64_t, pgwalk_walk_t *, void *)
 * Build: cc -O2 -shared -fPIC -o libcount_present.so count_present.c */
#include <stdint.h>

/* The first members of pgwalk_walk_t are stable (ABI version 1). */
typedef struct {
    void *private_data;
    int action;
} pgwalk_walk_head;

int count_present(uint64_t *entry, uint64_t addr, uint64_t next, pgwalk_walk_head *walk, void *ctx)
{
    (void)addr; (void)next; (void)walk;
    if (*entry & 1)
        (*(int64_t *)ctx)++;
    return 0;
}

/* A pmd_entry that asks the walker not to descend (ACTION_CONTINUE = 1). */
int skip_pmd(uint64_t *entry, uint64_t addr, uint64_t next, pgwalk_walk_head *walk, void *ctx)
{
    (void)entry; (void)addr; (void)next; (void)ctx;
    walk->action = 1;
    return 0;
}

/* Counts into the walk's private data instead of the slot's user data. */
int count_into_private(uint64_t *entry, uint64_t addr, uint64_t next, pgwalk_walk_head *walk, void *ctx)
{
    (void)addr; (void)next; (void)ctx;
    if (*entry & 1)
        (*(int64_t *)walk->private_data)++;
    return 0;
}
