"""RandomIdentitySampler: P x K batches, small identities drawn with replacement, every identity
in every epoch, deterministic per (seed, epoch), and DDP shards of whole batches."""

from collections import Counter

import pytest
import torch

from reidnet.data.sampler import RandomIdentitySampler
from reidnet.errors import ReidnetError

# Identity (non-contiguous pids, like raw Market ids) -> image count. Two identities have fewer
# than K = 4 images; 1003 has a single one.
IMAGE_COUNTS = {7: 4, 12: 2, 1003: 1, 30: 9, 41: 5, 52: 8, 63: 4, 74: 13, 85: 3, 96: 6}
LABELS = [pid for pid, count in IMAGE_COUNTS.items() for _ in range(count)]


def make_sampler(labels=LABELS, batch_size=12, num_instances=4, **kwargs):
    return RandomIdentitySampler(labels, batch_size, num_instances, **kwargs)


def test_every_batch_holds_p_distinct_identities_with_k_images_each():
    sampler = make_sampler(seed=3)
    batches = sampler.batches()
    assert batches
    for batch in batches:
        assert len(batch) == 12
        per_identity = Counter(LABELS[index] for index in batch)
        assert len(per_identity) == 3
        assert set(per_identity.values()) == {4}


def test_iteration_is_the_flattened_batches_and_len_is_exact():
    sampler = make_sampler(seed=5)
    indices = list(sampler)
    assert indices == [index for batch in sampler.batches() for index in batch]
    assert len(sampler) == len(indices)
    assert len(indices) % 12 == 0


def test_dataloader_rebuilds_the_same_batches():
    sampler = make_sampler(seed=1)
    dataset = torch.arange(len(LABELS))
    loader = torch.utils.data.DataLoader(dataset, batch_size=12, sampler=sampler, drop_last=True)
    assert [batch.tolist() for batch in loader] == sampler.batches()


def test_identities_with_fewer_than_k_images_are_drawn_with_replacement():
    only_image = LABELS.index(1003)
    for epoch in range(5):
        sampler = make_sampler(seed=0)
        sampler.set_epoch(epoch)
        chunks = [batch[i : i + 4] for batch in sampler.batches() for i in range(0, 12, 4)]
        assert [only_image] * 4 in chunks


def test_large_identities_use_distinct_images_within_a_chunk():
    sampler = make_sampler(seed=2)
    for batch in sampler.batches():
        for start in range(0, 12, 4):
            chunk = batch[start : start + 4]
            if IMAGE_COUNTS[LABELS[chunk[0]]] >= 4:
                assert len(set(chunk)) == 4


def test_every_identity_appears_in_every_epoch():
    # Seven identities with one chunk each and P = 3: taking P at a time leaves one identity
    # over every epoch; it must still be seen (in a last batch completed with others).
    seven = [pid for pid in range(7) for _ in range(4)]
    for labels in (LABELS, seven):
        sampler = make_sampler(labels, seed=11)
        for epoch in range(10):
            sampler.set_epoch(epoch)
            seen = {labels[index] for index in sampler}
            assert seen == set(labels), f"epoch {epoch}"


def test_same_seed_and_epoch_give_the_same_batches():
    first, second = make_sampler(seed=4), make_sampler(seed=4)
    first.set_epoch(7)
    second.set_epoch(7)
    assert first.batches() == second.batches()


def test_epochs_and_seeds_reshuffle():
    sampler = make_sampler(seed=4)
    epoch0 = sampler.batches()
    sampler.set_epoch(1)
    assert sampler.batches() != epoch0
    assert make_sampler(seed=5).batches() != epoch0


def test_ddp_ranks_get_disjoint_equal_shares_of_whole_batches():
    # 9 identities x 8 images, K = 4, P = 3: 18 chunks, 6 batches, each image used once.
    labels = [pid for pid in range(9) for _ in range(8)]
    full = make_sampler(labels, seed=9).batches()
    rank0 = make_sampler(labels, seed=9, num_replicas=2, rank=0)
    rank1 = make_sampler(labels, seed=9, num_replicas=2, rank=1)
    assert len(full) == 6
    assert rank0.batches() == full[0::2]
    assert rank1.batches() == full[1::2]
    assert len(rank0) == len(rank1) == 3 * 12
    assert not set(rank0) & set(rank1)


def test_ddp_drops_the_odd_batch_so_ranks_stay_in_step():
    full = make_sampler(seed=6).batches()
    shares = [make_sampler(seed=6, num_replicas=3, rank=r).batches() for r in range(3)]
    assert all(len(share) == len(full) // 3 for share in shares)
    assert shares[2] == full[2::3][: len(full) // 3]


def test_batch_size_must_be_a_multiple_of_num_instances():
    with pytest.raises(ReidnetError, match=r"dataset\.batch_size") as excinfo:
        make_sampler(batch_size=10, num_instances=4)
    assert "dataset.num_instances" in str(excinfo.value)


def test_too_few_identities_for_a_batch():
    with pytest.raises(ReidnetError, match="needs 16 distinct identities") as excinfo:
        make_sampler(batch_size=64, num_instances=4)
    assert "has 10" in str(excinfo.value)
