"""The sample data generators: deterministic, and the shipped sample files are what they make."""

from __future__ import annotations

from pathlib import Path

from credex.adapters.profile import Profile
from credex.adapters.samples import platform_samples, synth

SHIPPED = Path(__file__).resolve().parent.parent / "adapters" / "samples"


def test_the_shipped_demo_files_are_regenerated_byte_for_byte(tmp_path: Path) -> None:
    synth.write_demo_samples(tmp_path)
    for sample in synth.DEMO_SAMPLES:
        assert (tmp_path / sample.name).read_bytes() == (SHIPPED / sample.name).read_bytes(), sample.name


def test_the_shipped_platform_samples_are_regenerated_byte_for_byte(tmp_path: Path) -> None:
    written = platform_samples.write_platform_samples(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in (SHIPPED / "platforms").iterdir())
    for path in written:
        assert path.read_bytes() == (SHIPPED / "platforms" / path.name).read_bytes(), path.name


def test_national_files_have_the_national_profiles_columns_in_its_order() -> None:
    profile = Profile.load("national").spec
    for kind, columns in (("KIND_PENALTY", synth.PENALTY_COLUMNS), ("KIND_LICENCE", synth.LICENCE_COLUMNS)):
        spec = next(k for k in profile.kinds if k.kind == kind)
        assert [code for code, _ in columns] == [f.columns[0] for f in spec.fields.values()]
        assert [name for _, name in columns] == [f.columns[1] for f in spec.fields.values()]


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
