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


def test_ddp_ranks_split_every_global_batch_into_whole_identities():
    # 9 identities x 8 images, K = 4, P = 6 (global batch 24): 18 chunks, 3 batches; each of
    # 2 ranks takes 3 whole identities (12 images) of every batch, as TAO's DDP sampler does.
    labels = [pid for pid in range(9) for _ in range(8)]
    full = make_sampler(labels, batch_size=24, seed=9).batches()
    rank0 = make_sampler(labels, batch_size=24, seed=9, num_replicas=2, rank=0)
    rank1 = make_sampler(labels, batch_size=24, seed=9, num_replicas=2, rank=1)
    assert len(full) == len(rank0.batches()) == len(rank1.batches()) == 3
    for whole, part0, part1 in zip(full, rank0.batches(), rank1.batches(), strict=True):
        assert part0 + part1 == whole
        for part in (part0, part1):
            identities = [labels[i] for i in part]
            assert len(set(identities)) == 3
            assert all(identities.count(pid) == 4 for pid in set(identities))
        assert not {labels[i] for i in part0} & {labels[i] for i in part1}
    assert len(rank0) == len(rank1) == 3 * 12


def test_a_global_batch_that_ranks_cannot_share_by_identity_is_refused():
    with pytest.raises(ReidnetError, match=r"global batch.*e\.g\. 24"):
        make_sampler(batch_size=20, num_instances=4, num_replicas=2, rank=0)


def test_batch_size_must_be_a_multiple_of_num_instances():
    with pytest.raises(ReidnetError, match=r"dataset\.batch_size") as excinfo:
        make_sampler(batch_size=10, num_instances=4)
    assert "dataset.num_instances" in str(excinfo.value)


def test_too_few_identities_for_a_batch():
    with pytest.raises(ReidnetError, match="needs 16 distinct identities") as excinfo:
        make_sampler(batch_size=64, num_instances=4)
    assert "has 10" in str(excinfo.value)
