"""--device: parsing llama-server --list-devices, choosing, the memory offered, the flags per binary."""

from __future__ import annotations

import pytest

from services.node.devices import (
    CPU_DEVICE,
    DeviceError,
    UnknownDevice,
    choose_devices,
    device_memory_bytes,
    device_names,
    llama_server_device_args,
    parse_list_devices,
    rpc_server_device_args,
)
from services.runner.commands import build_argv
from services.runner.gguf_meta import ModelTraits
from services.runner.spec import ProcessKind, ProcessSpec

MIB = 1 << 20
CPU_BUILD = "load_backend: loaded CPU backend\nAvailable devices:\n  (none)\n"
TWO_GPUS = (
    "ggml_cuda_init: found 2 CUDA devices:\n"
    "Available devices:\n"
    "  CUDA0: NVIDIA H200 (143167 MiB, 142522 MiB free)\n"
    "  CUDA1: NVIDIA GeForce RTX 4090 (24080 MiB, 23500 MiB free)\n"
)
METAL = "Available devices:\n  MTL0: Apple M2 Max (49152 MiB, 49151 MiB free)\n"


def test_a_cpu_build_lists_no_offload_device_but_cpu_is_a_name() -> None:
    devices = parse_list_devices(CPU_BUILD)
    assert devices == ()
    assert device_names(devices) == (CPU_DEVICE,)
    assert choose_devices("CPU", devices) == ("CPU",)


def test_gpus_are_parsed_with_their_memory() -> None:
    devices = parse_list_devices(TWO_GPUS)
    assert [d.name for d in devices] == ["CUDA0", "CUDA1"]
    assert devices[0].description == "NVIDIA H200"
    assert devices[0].total_bytes == 143167 * MIB
    assert devices[1].free_bytes == 23500 * MIB
    assert parse_list_devices(METAL)[0].name == "MTL0"


def test_output_without_a_device_list_is_an_error() -> None:
    with pytest.raises(DeviceError):
        parse_list_devices("error: unknown argument: --list-devices\n")


def test_a_wrong_name_is_one_line_listing_the_real_ones() -> None:
    devices = parse_list_devices(TWO_GPUS)
    with pytest.raises(UnknownDevice) as caught:
        choose_devices("CUDA2", devices)
    message = str(caught.value)
    assert "\n" not in message
    assert "CUDA2" in message and "CUDA0, CUDA1, CPU" in message


def test_several_gpus_and_bad_lists() -> None:
    devices = parse_list_devices(TWO_GPUS)
    assert choose_devices("CUDA0, CUDA1", devices) == ("CUDA0", "CUDA1")
    for bad in ("CUDA0,", "CPU,CUDA0", "cuda0"):
        with pytest.raises(UnknownDevice):
            choose_devices(bad, devices)


def test_memory_follows_the_chosen_device() -> None:
    devices = parse_list_devices(TWO_GPUS)
    system = 64 << 30
    assert device_memory_bytes(("CUDA1",), devices, system) == 24080 * MIB
    assert device_memory_bytes(("CUDA0", "CUDA1"), devices, system) == (143167 + 24080) * MIB
    assert device_memory_bytes(("CPU",), devices, system) == system


def test_flags_per_binary() -> None:
    # llama-server refuses `--device CPU`: its word for no offload is `none`; rpc-server takes CPU.
    assert llama_server_device_args("CPU") == ["--device", "none"]
    assert llama_server_device_args("CUDA0,CUDA1") == ["--device", "CUDA0,CUDA1"]
    assert llama_server_device_args("") == []
    assert rpc_server_device_args("CPU") == ["-d", "CPU"]
    assert rpc_server_device_args("") == []


def test_argv_carries_the_device(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = ProcessSpec(key="llama-server/m", kind=ProcessKind.LLAMA_SERVER, model="m", model_path="m.gguf")
    rpc = ProcessSpec(key="rpc-server/m", kind=ProcessKind.RPC_SERVER, model="m", device="CUDA1")
    argv = build_argv(ProcessSpec(**{**server.__dict__, "device": "CUDA0"}), tmp_path, 1, 2, ModelTraits())
    assert argv[argv.index("--device") + 1] == "CUDA0"
    assert "--device" not in build_argv(server, tmp_path, 1, 2, ModelTraits())
    rpc_argv = build_argv(rpc, tmp_path, 1, 2)
    assert rpc_argv[rpc_argv.index("-d") + 1] == "CUDA1"


def test_a_cpu_split_host_with_a_gpu_offloads_nothing_of_its_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    host = ProcessSpec(
        key="llama-server/m",
        kind=ProcessKind.LLAMA_SERVER,
        model="m",
        model_path="m.gguf",
        rpc_endpoints=("127.0.0.1:5000",),
        tensor_split=(0.5, 0.5),
        device="CPU",
    )
    argv = build_argv(host, tmp_path, 1, 2, ModelTraits(layer_count=10), local_gpu=True)
    # The CPU-only form: -ngl covers the worker's layers plus the output layer, kept on the host by -ot.
    assert argv[argv.index("-ngl") + 1] == "6"
    assert "-ot" in argv


def test_the_spec_round_trips_the_device() -> None:
    spec = ProcessSpec(key="rpc-server/m", kind=ProcessKind.RPC_SERVER, device="MTL0")
    assert ProcessSpec.from_proto(spec.to_proto()).device == "MTL0"
