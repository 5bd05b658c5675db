/*
 * The minibatch iterator: a permutation of a client's index array per epoch, served in
 * slices. One buffer allocated at init; nothing per epoch or per batch; samples never copied.
 */
#include <assert.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/data.h"

fedc_status fedc_batch_iter_init(fedc_batch_iter *it, const uint32_t *idx, size_t n,
                                 size_t batch_size, int drop_last, fedc_err *err)
{
    assert(it && (idx || n == 0) && batch_size > 0);
    memset(it, 0, sizeof *it);
    it->perm_ = fedc_malloc((n ? n : 1) * sizeof *it->perm_);
    if (!it->perm_) return fedc_err_set(err, FEDC_ERR_NOMEM, "batch iterator: out of memory");
    it->idx_ = idx;
    it->n_ = n;
    it->batch_size_ = batch_size;
    it->drop_last_ = drop_last != 0;
    it->pos_ = n; /* no epoch started: next() returns 0 */
    return FEDC_OK;
}

void fedc_batch_iter_fini(fedc_batch_iter *it)
{
    if (!it) return;
    fedc_free(it->perm_);
    memset(it, 0, sizeof *it);
}

void fedc_batch_iter_epoch(fedc_batch_iter *it, fedc_rng *rng)
{
    assert(it->perm_);
    if (it->n_) memcpy(it->perm_, it->idx_, it->n_ * sizeof *it->perm_);
    if (rng) fedc_rng_shuffle_u32(rng, it->perm_, it->n_);
    it->pos_ = 0;
    it->epoch_++;
}

size_t fedc_batch_iter_next(fedc_batch_iter *it, const uint32_t **batch)
{
    size_t left = it->n_ - it->pos_;
    if (left == 0 || (it->drop_last_ && left < it->batch_size_)) {
        *batch = NULL;
        return 0;
    }
    size_t b = left < it->batch_size_ ? left : it->batch_size_;
    *batch = it->perm_ + it->pos_;
    it->pos_ += b;
    return b;
}

size_t fedc_batch_iter_num_batches(const fedc_batch_iter *it)
{
    if (it->drop_last_) return it->n_ / it->batch_size_;
    return (it->n_ + it->batch_size_ - 1) / it->batch_size_;
}

uint64_t fedc_batch_iter_epochs(const fedc_batch_iter *it)
{
    return it->epoch_;
}
