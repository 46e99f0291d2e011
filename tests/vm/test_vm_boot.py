"""A VM boots the rootfs that pin.add hands out and sees the image's tree.

The image (a 24 MiB file in its first layer, then erofs_kit's layers with
whiteouts, an opaque directory, hard links, symlinks, devices, fifos,
xattrs, set-id bits and long names) is built with tar and umoci, loaded
into the real daemon and pinned. QEMU boots a Debian kernel with the VMDK
as its one disk; the guest mounts it as erofs and prints every path. What
it printed must equal the tree ``umoci unpack`` makes of the same image on
the host.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import erofs_kit as kit
import vmkit

BIG_FILE_BYTES = 24 << 20
# Enough small files that the first layers take a few hundred blocks, few
# enough that the guest lists them in seconds under TCG.
SMALL_FILES = 60


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The OCI layout and the host's view of its merged tree."""
    d = tmp_path_factory.mktemp("vm-image")
    t = kit.Tar(d / "l0.tar")
    t.dir("big")
    t.big("big/blob", BIG_FILE_BYTES, seed=7)
    t.file("etc-early", b"first layer, read through the second device\n")
    tars = [t.close(), kit.write_base_layer(d / "l1.tar", big=False, many=SMALL_FILES),
            kit.write_upper_layer(d / "l2.tar"), kit.write_gnu_layer(d / "l3.tar")]
    img = kit.build_oci(d / "layout", "vm", tars)
    want = kit.snapshot(kit.umoci_unpack(img, d / "bundle"))
    return img, want


def _pin(rpc, img) -> dict:
    handles = rpc.call("image.load", {"path": str(img.layout)}, timeout=300)
    rootfs = rpc.call("pin.add", {"kind": "sandbox", "name": "vm", "reference": handles[0]["reference"]})
    assert rootfs["manifest_digest"] == img.manifest_digest
    assert [l["diff_id"] for l in rootfs["layers"]] == img.diff_ids
    return rootfs


def _report(boot: vmkit.Boot, what: str) -> str:
    return f"{what}\n--- guest output ---\n{boot.output[-4000:]}\n--- console ---\n{boot.console[-3000:]}"


def test_guest_mounts_the_vmdk_as_one_disk(daemon, rpc, image, new_kernel, tmp_path):
    img, want = image
    rootfs = _pin(rpc, img)
    initrd = vmkit.build_initramfs(new_kernel, tmp_path / "initrd.cpio", [("vmdk", "/dev/vda", "ro")])
    boot = vmkit.boot(new_kernel, initrd, [f"file={rootfs['vmdk_path']},format=vmdk,if=virtio,readonly=on"],
                      tmp_path)
    print(f"guest {new_kernel.release} ({boot.accel}): {boot.seconds:.1f} s")
    m = vmkit.mounts(boot.output).get("vmdk")
    assert m is not None, _report(boot, "the guest printed no result for the VMDK")
    assert m.ok, _report(boot, "the guest could not mount the VMDK")
    assert m.release == new_kernel.release
    got = vmkit.snapshot(m)
    assert got == want, "\n".join(kit.diff(got, want))


def test_older_guest_mounts_fsmeta_with_device_options(daemon, rpc, image, old_kernel, tmp_path):
    """Linux before 6.3 opens each extra device by its tag and so cannot use
    the VMDK; with fsmeta and every layer image as separate disks, named in
    order by device= mount options, it sees the same tree."""
    img, want = image
    rootfs = _pin(rpc, img)
    disks = [rootfs["vmdk_path"], rootfs["fsmeta_path"], *(l["path"] for l in rootfs["layers"])]
    names = [f"/dev/vd{chr(ord('a') + i)}" for i in range(len(disks))]
    drives = [f"file={rootfs['vmdk_path']},format=vmdk,if=virtio,readonly=on"]
    drives += [f"file={p},format=raw,if=virtio,readonly=on" for p in disks[1:]]
    options = ",".join(["ro", *(f"device={n}" for n in names[2:])])
    initrd = vmkit.build_initramfs(old_kernel, tmp_path / "initrd.cpio",
                                   [("vmdk", names[0], "ro"), ("devices", names[1], options)])
    boot = vmkit.boot(old_kernel, initrd, drives, tmp_path)
    print(f"guest {old_kernel.release} ({boot.accel}): {boot.seconds:.1f} s")
    results = vmkit.mounts(boot.output)
    assert set(results) == {"vmdk", "devices"}, _report(boot, "the guest did not try both mounts")
    # It looks for a file named by the device's tag (the layer's diff_id).
    assert not results["vmdk"].ok, _report(boot, f"{old_kernel.release} mounted the VMDK: update the README")
    said = "\n".join(results["vmdk"].lines)
    print(f"{old_kernel.release} on the VMDK: {said}")
    assert "No such file or directory" in said, _report(boot, "the old guest failed otherwise")
    m = results["devices"]
    assert m.ok, _report(boot, "the guest could not mount fsmeta with device= options")
    assert m.release == old_kernel.release
    got = vmkit.snapshot(m)
    assert got == want, "\n".join(kit.diff(got, want))
