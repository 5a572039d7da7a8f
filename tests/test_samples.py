"""The sample data generator: deterministic, and the shipped demo files are what it makes."""

from __future__ import annotations

from pathlib import Path

from credex.adapters import synth

SHIPPED = Path(__file__).resolve().parent.parent / "adapters" / "samples"


def test_the_shipped_demo_files_are_regenerated_byte_for_byte(tmp_path: Path) -> None:
    synth.write_demo_samples(tmp_path)
    for sample in synth.DEMO_SAMPLES:
        assert (tmp_path / sample.name).read_bytes() == (SHIPPED / sample.name).read_bytes(), sample.name


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_rows() -> None:
    spec = synth.SynthSpec(region="330000", rows=50, seed=3)
    first = [r.values for r in synth.generate(spec)]
    assert first == [r.values for r in synth.generate(spec)]
    assert first != [r.values for r in synth.generate(synth.SynthSpec(region="330000", rows=50, seed=4))]


def test_the_bad_share_and_shared_subjects_are_as_asked(tmp_path: Path) -> None:
    summary = synth.write(
        tmp_path / "x.csv", synth.SynthSpec(region="320000", rows=2000, bad_share=0.1, shared_share=0.2)
    )
    assert 150 < summary.bad < 250
    assert sum(summary.defects.values()) == summary.bad
    assert len(summary.shared_subjects) > 10
    shanghai = synth.write(tmp_path / "y.csv", synth.SynthSpec(region="310000", rows=2000, shared_share=0.2))
    assert summary.shared_subjects & shanghai.shared_subjects, "regions must share subjects"
