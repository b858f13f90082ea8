"""Components, environments, StaticSource, collect() and the strength report."""

from __future__ import annotations

import re

import pytest

from modelseal.device import (
    COMPONENT_KINDS,
    BindingStrength,
    Component,
    DeviceFingerprint,
    Environment,
    StaticSource,
    collect,
)

SECRET_VALUE = "4c4c4544-0042-3510-8052-b4c04f4e3232"
VM = Environment("vm", ("dmi:kvm",), "linux")


def test_repr_and_str_never_show_the_value() -> None:
    c = Component.of("dmi.product_uuid", SECRET_VALUE)
    fp = collect(StaticSource([c], VM))
    for text in (repr(c), str(c), repr(fp), str(fp), repr(fp.components), f"{c!r}"):
        assert SECRET_VALUE not in text
        assert "dmi.product_uuid" in text


def test_preview_is_short_and_not_the_value() -> None:
    c = Component.of("os.hostname", "edge-box")
    assert len(c.preview) == 8
    assert re.fullmatch(r"[0-9a-f]{8}", c.preview), c.preview  # 8 lowercase hex digits
    assert c.preview == Component.of("os.hostname", "edge-box").preview
    assert c.preview != Component.of("os.hostname", "edge-box2").preview
    assert c.preview != Component.of("dmi.board_serial", "edge-box").preview


def test_component_of_uses_the_table() -> None:
    for kind, info in COMPONENT_KINDS.items():
        c = Component.of(kind, "v")
        assert (c.strength, c.weight) == (info.strength, info.weight)
        assert info.why


def test_weights_strong_above_weak_and_every_weak_weighs_one() -> None:
    strong = [i.weight for i in COMPONENT_KINDS.values() if i.strength == "strong"]
    weak = [i.weight for i in COMPONENT_KINDS.values() if i.strength == "weak"]
    assert min(strong) > max(weak)
    assert set(weak) == {1}
    for kind in ("cpu.id", "os.machine_id", "os.hostname"):
        assert COMPONENT_KINDS[kind].strength == "weak"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "", "value": "v", "strength": "strong", "weight": 1},
        {"kind": "Bad Kind", "value": "v", "strength": "strong", "weight": 1},
        {"kind": "nodot", "value": "v", "strength": "strong", "weight": 1},
        {"kind": "a.b", "value": "", "strength": "strong", "weight": 1},
        {"kind": "a.b", "value": "x\0y", "strength": "strong", "weight": 1},
        {"kind": "a.b", "value": "v", "strength": "medium", "weight": 1},
        {"kind": "a.b", "value": "v", "strength": "strong", "weight": 0},
        {"kind": "a.b", "value": "v", "strength": "strong", "weight": True},
        {"kind": "a.b", "value": "v", "strength": "strong", "weight": 101},
        {"kind": "a.b", "value": 5, "strength": "strong", "weight": 1},
    ],
)
def test_component_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        Component(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        ("bare", (), "linux"),
        ("vm", (), "freebsd"),
        ("vm", ["kvm"], "linux"),
        ("vm", ("",), "linux"),
        ("vm", ("x" * 500,), "linux"),
        ("vm", tuple(f"e{i}" for i in range(40)), "linux"),
    ],
)
def test_environment_validation(args: tuple[object, object, object]) -> None:
    with pytest.raises(ValueError, match=r"must|longer"):
        Environment(*args)  # type: ignore[arg-type]


def test_static_source_and_collect_dedupe_and_sort() -> None:
    a = Component.of("net.mac", "00:1b:21:00:00:09")
    b = Component.of("net.mac", "00:1b:21:00:00:01")
    u = Component.of("dmi.product_uuid", SECRET_VALUE)
    source = StaticSource([a, u, b, a], VM)
    fp = collect(source)
    assert fp.components == (u, b, a)
    assert fp.environment is VM
    assert source.components() == [a, u, b, a]  # a copy: the source is not changed
    assert SECRET_VALUE not in repr(source)


def test_collect_refuses_non_components() -> None:
    class Broken:
        def components(self) -> list[Component]:
            return ["dmi.product_uuid"]  # type: ignore[list-item]

        def environment(self) -> Environment:
            return VM

    with pytest.raises(TypeError):
        collect(Broken())


def _fp(strong: int, weak: int, env: Environment = VM) -> DeviceFingerprint:
    comps = [Component.of("net.mac", f"00:1b:21:00:00:{i:02x}") for i in range(strong)]
    comps += [Component("os.extra", f"w{i}", "weak", 1) for i in range(weak)]
    return collect(StaticSource(comps, env))


def test_strength_report() -> None:
    report = _fp(3, 2).strength_report()
    assert isinstance(report, BindingStrength)
    assert (report.total, report.strong, report.weak) == (5, 3, 2)
    assert (report.strong_weight, report.weak_weight, report.total_weight) == (6, 2, 8)
    assert report.summary() == "3 strong, 2 weak components; in a VM"
    assert str(report) == report.summary()
    assert report.weak_only_can_meet(2)
    assert not report.weak_only_can_meet(3)


def test_strength_report_with_threshold_and_environments() -> None:
    weak_only = _fp(0, 3, Environment("container", ("cgroup:docker",), "linux"))
    report = weak_only.strength_report(threshold=2)
    assert report.threshold == 2
    assert report.summary() == (
        "0 strong, 3 weak components; in a container; weak components alone reach threshold 2"
    )
    assert _fp(1, 0, Environment("none", (), "linux")).strength_report(5).summary() == (
        "1 strong, 0 weak component; on bare metal"
    )
    assert _fp(0, 0, Environment("unknown", (), "darwin")).strength_report().total == 0
