//! APK v2 reader and writer: the real Alpine fixture (members, identity, signature, entries),
//! corruption, trust and escape refusals, and a signed write/read round trip (libtest-mimic:
//! trials needing the shared Alpine data are listed as ignored, with the reason on stderr).
//!
//! One file because: cargo builds each `tests/*.rs` as its own binary (a link each); the trials
//! share the test key and the signed-package builders.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use support::{Case, R};

use std::fs;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use harness::fixtures::{alpine_dir, needs};
use harness::package::apk::{self, SigningKey};
use harness::package::{Entry, EntryKind, ReadOptions, Visitor};
use harness::Error;
use libtest_mimic::{Arguments, Failed, Trial};
use sha1::{Digest, Sha1};
use sha2::Sha256;

const FIXTURE: &str = "alpine-v3.16-aarch64-alpine-baselayout-3.2.0-r23.apk";
const FIXTURE_KEY: &str = "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub";
const OTHER_KEY: &str = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub";
const FIXTURE_MEMBERS: [Range<u64>; 3] = [0..666, 666..2229, 2229..11012];
const TEST_KEY: &str = "btfgate-test.rsa.pub";

/// Records every visited entry with the SHA-1 of the content it read.
#[derive(Default)]
struct Recorder {
    entries: Vec<(String, EntryKind, u64, String)>,
    ended: bool,
}

impl Visitor for Recorder {
    fn visit(&mut self, entry: &Entry, data: &mut dyn Read) -> harness::Result<()> {
        let mut content = Vec::new();
        data.read_to_end(&mut content)
            .map_err(|e| Error::io(&entry.path, "test visitor", e))?;
        self.entries.push((
            entry.path.to_string_lossy().into_owned(),
            entry.kind.clone(),
            entry.size,
            hex::encode(Sha1::digest(&content)),
        ));
        Ok(())
    }
    fn end(&mut self, _packed_end: Option<u64>) -> harness::Result<()> {
        self.ended = true;
        Ok(())
    }
}

impl Recorder {
    fn find(&self, path: &str) -> Option<&(String, EntryKind, u64, String)> {
        self.entries.iter().find(|e| e.0 == path)
    }
}

fn fixture(dir: &Path) -> PathBuf {
    dir.join("fixtures").join(FIXTURE)
}

fn trusted(dir: &Path) -> ReadOptions {
    ReadOptions {
        keys_dir: dir.join("keys"),
        allow_untrusted: false,
    }
}

fn opts(keys_dir: &Path, allow_untrusted: bool) -> ReadOptions {
    ReadOptions {
        keys_dir: keys_dir.to_path_buf(),
        allow_untrusted,
    }
}

fn alpine() -> PathBuf {
    alpine_dir().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Real fixture

fn fixture_inspect() -> R {
    let dir = alpine();
    let info = apk::inspect(&fixture(&dir), &trusted(&dir))?;
    ensure!(
        info.members == FIXTURE_MEMBERS,
        "members {:?}",
        info.members
    );
    ensure!(
        info.identity == "Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc=",
        "identity {}",
        info.identity
    );
    ensure!(
        info.signer.as_deref() == Some(FIXTURE_KEY),
        "signer {:?}",
        info.signer
    );
    ensure!(info.datahash_ok, "datahash not verified");
    ensure!(
        info.control_files
            == [
                ".PKGINFO",
                ".pre-install",
                ".pre-upgrade",
                ".post-upgrade",
                ".post-install"
            ],
        "control files {:?}",
        info.control_files
    );
    let p = &info.pkginfo;
    ensure!(
        p.get("pkgname") == Some("alpine-baselayout"),
        "pkgname {:?}",
        p.get("pkgname")
    );
    ensure!(
        p.get("pkgver") == Some("3.2.0-r23"),
        "pkgver {:?}",
        p.get("pkgver")
    );
    ensure!(p.get("arch") == Some("aarch64"), "arch {:?}", p.get("arch"));
    ensure!(p.get("size") == Some("339968"), "size {:?}", p.get("size"));
    ensure!(
        p.get("builddate") == Some("1662926906"),
        "builddate {:?}",
        p.get("builddate")
    );
    ensure!(
        p.get_all("depend")
            == [
                "alpine-baselayout-data=3.2.0-r23",
                "/bin/sh",
                "so:libc.musl-aarch64.so.1"
            ],
        "depend {:?}",
        p.get_all("depend")
    );
    ensure!(
        p.get_all("provides") == ["cmd:mkmntdirs=3.2.0-r23"],
        "provides {:?}",
        p.get_all("provides")
    );
    ensure!(
        p.get("datahash")
            == Some("1a3a8e47d2287da6d505d973412cee1ad64bcc17bc5995069e4e932055ecb0c4"),
        "datahash {:?}",
        p.get("datahash")
    );
    Ok(())
}

fn fixture_read() -> R {
    let dir = alpine();
    let mut rec = Recorder::default();
    // Through the format dispatcher, as callers use it.
    let meta = harness::package::read(&fixture(&dir), &trusted(&dir), &mut rec)?;
    ensure!(meta.name == "alpine-baselayout", "name {}", meta.name);
    ensure!(meta.version == "3.2.0-r23", "version {}", meta.version);
    ensure!(meta.arch == "aarch64", "arch {}", meta.arch);
    ensure!(
        meta.installed_size == Some(339_968),
        "installed size {:?}",
        meta.installed_size
    );
    ensure!(meta.file_size == 11012, "file size {}", meta.file_size);
    ensure!(
        meta.signer.as_deref() == Some(FIXTURE_KEY),
        "signer {:?}",
        meta.signer
    );
    ensure!(rec.ended, "visitor end not called");
    let files: Vec<(&str, u64)> = rec
        .entries
        .iter()
        .filter(|e| e.1 == EntryKind::File)
        .map(|e| (e.0.as_str(), e.2))
        .collect();
    let want = [
        ("etc/crontabs/root", 283),
        ("etc/modprobe.d/aliases.conf", 1545),
        ("etc/modprobe.d/blacklist.conf", 2136),
        ("etc/modprobe.d/i386.conf", 122),
        ("etc/modprobe.d/kms.conf", 91),
        ("etc/motd", 283),
        ("etc/profile.d/README", 249),
        ("etc/profile.d/color_prompt.sh.disabled", 447),
        ("etc/profile.d/locale.sh", 61),
        ("lib/sysctl.d/00-alpine.conf", 1278),
        ("sbin/mkmntdirs", 5736),
    ];
    ensure!(files == want, "regular files {files:#?}");
    for (path, target) in [
        ("var/run", "/run"),
        ("var/spool/cron/crontabs", "/etc/crontabs"),
        ("var/spool/mail", "/var/mail"),
    ] {
        let e = rec.find(path).ok_or_else(|| format!("no {path}"))?;
        ensure!(
            e.1 == EntryKind::Symlink(target.into()),
            "{path}: {:?}",
            e.1
        );
    }
    ensure!(
        rec.entries
            .iter()
            .any(|e| e.0 == "var/spool" && e.1 == EntryKind::Dir),
        "directory var/spool not visited"
    );
    // The visitor read exactly the content the package's PAX header APK-TOOLS.checksum.SHA1
    // names for etc/motd (283 bytes), the content the reader verified.
    let motd = rec.find("etc/motd").unwrap();
    ensure!(
        motd.3 == "5e676e555354447436ed3bd8a752ebe5332d15c0" && motd.2 == 283,
        "etc/motd: {} bytes, sha1 {}",
        motd.2,
        motd.3
    );
    Ok(())
}

/// Every offset of `range` the flip test touches: magic, first deflate byte, middle, CRC, size.
fn probe_offsets(range: &Range<u64>) -> Vec<u64> {
    let (s, e) = (range.start, range.end);
    vec![
        s,
        s + 1,
        s + 10,
        s + 11,
        (s + e) / 2,
        (s + e) / 2 + 1,
        e - 10,
        e - 8,
        e - 5,
        e - 1,
    ]
}

fn fixture_flipped_bytes() -> R {
    // Note: bytes 4..10 of the signature member's gzip header (mtime, flags, OS) are covered by
    // nothing, in apk-tools either; every other byte is covered by the gzip CRC, the signature
    // or the datahash.
    let dir = alpine();
    let orig = fs::read(fixture(&dir))?;
    let tmp = tempfile::tempdir()?;
    let p = tmp.path().join("flipped.apk");
    for (m, range) in FIXTURE_MEMBERS.iter().enumerate() {
        for off in probe_offsets(range) {
            if m == 0 && (4..10).contains(&off) {
                continue;
            }
            let mut bytes = orig.clone();
            bytes[off as usize] ^= 0xff;
            fs::write(&p, &bytes)?;
            let mut rec = Recorder::default();
            match apk::read(&p, &trusted(&dir), &mut rec) {
                Ok(_) => {
                    return Err(
                        format!("member {m}: flipped byte at {off} was not detected").into(),
                    )
                }
                Err(e) => {
                    if m > 0 {
                        ensure!(
                            rec.entries.is_empty(),
                            "member {m} offset {off}: {} entries visited before the error {e}",
                            rec.entries.len()
                        );
                    }
                    if m == 2 && off > range.start + 1 {
                        ensure!(
                            e.phase() == "verify datahash",
                            "data offset {off}: expected a datahash error, got {e}"
                        );
                    }
                    if m == 1 && off > range.start + 10 {
                        ensure!(
                            matches!(e, Error::Untrusted { .. } | Error::BadInput { .. }),
                            "control offset {off}: {e}"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn fixture_untrusted() -> R {
    let dir = alpine();
    let keys = tempfile::tempdir()?;
    let mut rec = Recorder::default();
    match apk::read(&fixture(&dir), &opts(keys.path(), false), &mut rec) {
        Err(Error::Untrusted { msg, .. }) => {
            ensure!(
                msg.contains(FIXTURE_KEY),
                "message does not name the key id: {msg}"
            );
            ensure!(
                msg.contains(&keys.path().display().to_string()),
                "message does not name the keys dir: {msg}"
            );
        }
        other => return Err(format!("expected an untrusted error, got {other:?}").into()),
    }
    ensure!(rec.entries.is_empty(), "entries visited without trust");
    let meta = apk::read(&fixture(&dir), &opts(keys.path(), true), &mut rec)?;
    ensure!(
        meta.signer.is_none(),
        "signer {:?} with an empty keys dir",
        meta.signer
    );
    ensure!(rec.entries.len() > 14, "only {} entries", rec.entries.len());
    let info = apk::inspect(&fixture(&dir), &opts(keys.path(), true))?;
    ensure!(info.signer.is_none() && info.datahash_ok, "{info:?}");
    Ok(())
}

fn fixture_wrong_key_present() -> R {
    // A key file with the signer's name but another key: corruption, refused even when
    // untrusted packages are allowed.
    let dir = alpine();
    let keys = tempfile::tempdir()?;
    fs::copy(
        dir.join("keys").join(OTHER_KEY),
        keys.path().join(FIXTURE_KEY),
    )?;
    for allow in [false, true] {
        match apk::inspect(&fixture(&dir), &opts(keys.path(), allow)) {
            Err(Error::Untrusted { msg, .. }) => {
                ensure!(msg.contains("does not verify"), "allow={allow}: {msg}");
            }
            other => {
                return Err(
                    format!("allow={allow}: expected an untrusted error, got {other:?}").into(),
                )
            }
        }
    }
    Ok(())
}

fn fixture_truncated() -> R {
    let dir = alpine();
    let orig = fs::read(fixture(&dir))?;
    let tmp = tempfile::tempdir()?;
    let p = tmp.path().join("truncated.apk");
    for len in [
        0usize, 1, 100, 665, 666, 667, 1500, 2229, 2230, 6000, 11004, 11011,
    ] {
        fs::write(&p, &orig[..len])?;
        let mut rec = Recorder::default();
        let res = apk::read(&p, &trusted(&dir), &mut rec);
        ensure!(res.is_err(), "truncated to {len} bytes: read succeeded");
        ensure!(
            rec.entries.is_empty(),
            "truncated to {len}: entries visited"
        );
        // Even without trust: the datahash and gzip framing still catch it.
        let res = apk::read(&p, &opts(tmp.path(), true), &mut Recorder::default());
        ensure!(
            res.is_err(),
            "truncated to {len} bytes, untrusted allowed: read succeeded"
        );
    }
    // Appended garbage fails the datahash too.
    let mut longer = orig.clone();
    longer.extend_from_slice(b"trailing");
    fs::write(&p, &longer)?;
    ensure!(
        apk::read(&p, &trusted(&dir), &mut Recorder::default()).is_err(),
        "appended bytes accepted"
    );
    Ok(())
}

fn fixture_tampered_control() -> R {
    // Valid gzip, valid tar, one changed .PKGINFO value: only the signature can catch it.
    let dir = alpine();
    let orig = fs::read(fixture(&dir))?;
    let [sig, control, data] = FIXTURE_MEMBERS.map(|r| &orig[r.start as usize..r.end as usize]);
    let tar = gunzip(control);
    let at = tar.windows(9).position(|w| w == b"3.2.0-r23").unwrap();
    let mut changed = tar.clone();
    changed[at..at + 9].copy_from_slice(b"3.2.0-r99");
    let tmp = tempfile::tempdir()?;
    let p = tmp.path().join("tampered.apk");
    for (what, tar) in [("recompressed", tar), ("changed", changed)] {
        fs::write(&p, [sig, &gz(&tar), data].concat())?;
        for allow in [false, true] {
            let mut o = trusted(&dir);
            o.allow_untrusted = allow;
            let mut rec = Recorder::default();
            match apk::read(&p, &o, &mut rec) {
                Err(Error::Untrusted { msg, .. }) => {
                    ensure!(
                        msg.contains("does not verify") && msg.contains(FIXTURE_KEY),
                        "{what}: {msg}"
                    )
                }
                other => {
                    return Err(
                        format!("{what}, allow={allow}: expected untrusted, got {other:?}").into(),
                    )
                }
            }
            ensure!(rec.entries.is_empty(), "{what}: entries visited");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Format errors that need no fixture

fn adb_is_unsupported() -> R {
    let tmp = tempfile::tempdir()?;
    let p = tmp.path().join("v3.apk");
    fs::write(&p, b"ADBd\x00\x00\x00\x00pckg some v3 payload")?;
    let o = opts(tmp.path(), true);
    match apk::read(&p, &o, &mut Recorder::default()) {
        Err(Error::Unsupported { msg, .. }) => ensure!(msg.contains("APK v3 (ADB)"), "{msg}"),
        other => return Err(format!("expected unsupported, got {other:?}").into()),
    }
    ensure!(
        matches!(
            harness::package::read(&p, &o, &mut Recorder::default()),
            Err(Error::Unsupported { .. })
        ),
        "package::read does not report ADB as unsupported"
    );
    Ok(())
}

fn garbage_is_bad_input() -> R {
    let tmp = tempfile::tempdir()?;
    let p = tmp.path().join("garbage.apk");
    fs::write(&p, b"this is not a package at all")?;
    match apk::read(&p, &opts(tmp.path(), true), &mut Recorder::default()) {
        Err(e @ Error::BadInput { .. }) => ensure!(e.phase() == "split gzip members", "{e}"),
        other => return Err(format!("expected bad input, got {other:?}").into()),
    }
    // A gzip member holding something that is not a tar.
    fs::write(&p, gz(b"plain text, not a tar archive"))?;
    ensure!(
        matches!(
            apk::read(&p, &opts(tmp.path(), true), &mut Recorder::default()),
            Err(Error::BadInput { .. })
        ),
        "gzip of text accepted"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writer

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(TEST_KEY, 2048).unwrap())
}

const VMLINUZ: &[u8] = b"not really a kernel\n";

/// A tree with a file, nested directories, an executable and a relative symlink.
fn make_tree(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(root.join("boot"))?;
    fs::write(root.join("boot/vmlinuz-test"), VMLINUZ)?;
    fs::create_dir_all(root.join("lib/modules/6.1.0-test/kernel/fs"))?;
    fs::write(
        root.join("lib/modules/6.1.0-test/kernel/fs/overlay.ko"),
        vec![0x7fu8; 10_000],
    )?;
    std::os::unix::fs::symlink(
        "kernel/fs/overlay.ko",
        root.join("lib/modules/6.1.0-test/overlay.ko"),
    )?;
    fs::create_dir_all(root.join("usr/bin"))?;
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n")?;
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn pkginfo() -> Vec<(&'static str, String)> {
    vec![
        ("pkgname", "btfgate-test".to_string()),
        ("pkgver", "6.1.0-r0".to_string()),
        ("pkgdesc", "btfgate round trip".to_string()),
        ("arch", "x86_64".to_string()),
        ("depend", "mkinitfs>=3.6.0".to_string()),
        ("depend", "so:libc.musl-x86_64.so.1".to_string()),
    ]
}

struct Written {
    _tmp: tempfile::TempDir,
    apk: PathBuf,
    keys: PathBuf,
}

fn write_signed() -> Result<Written, Failed> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("root");
    make_tree(&root)?;
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir)?;
    let apk_path = out_dir.join("btfgate-test-6.1.0-r0.apk");
    apk::write_apk(&root, &pkginfo(), Some(key()), &apk_path).map_err(|e| format!("{e:#}"))?;
    let names: Vec<_> = fs::read_dir(&out_dir)?
        .map(|e| e.unwrap().file_name())
        .collect();
    ensure!(
        names.len() == 1,
        "temporary files left next to the package: {names:?}"
    );
    let keys = tmp.path().join("keys");
    fs::create_dir(&keys)?;
    fs::write(keys.join(TEST_KEY), key().public_pem())?;
    Ok(Written {
        _tmp: tmp,
        apk: apk_path,
        keys,
    })
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

fn writer_round_trip() -> R {
    let w = write_signed()?;
    let o = opts(&w.keys, false);
    let info = apk::inspect(&w.apk, &o)?;
    ensure!(info.members.len() == 3, "members {:?}", info.members);
    ensure!(
        info.signer.as_deref() == Some(TEST_KEY),
        "signer {:?}",
        info.signer
    );
    ensure!(info.datahash_ok, "datahash");
    ensure!(
        info.control_files == [".PKGINFO"],
        "control files {:?}",
        info.control_files
    );
    ensure!(
        info.pkginfo.get_all("depend") == ["mkinitfs>=3.6.0", "so:libc.musl-x86_64.so.1"],
        "{:?}",
        info.pkginfo
    );
    let bytes = fs::read(&w.apk)?;
    let control = &bytes[info.members[1].start as usize..info.members[1].end as usize];
    let identity = format!("Q1{}", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(control))
    });
    ensure!(
        info.identity == identity,
        "identity {} != {identity}",
        info.identity
    );
    // abuild layout: control and signature tars without end blocks, data tar with them.
    let control_tar = gunzip(control);
    ensure!(
        control_tar.len().is_multiple_of(512) && control_tar.len() <= 1024,
        "control tar {} bytes",
        control_tar.len()
    );
    ensure!(
        control_tar[control_tar.len() - 512..]
            .iter()
            .any(|b| *b != 0),
        "control tar ends with a zero block"
    );
    let sig_tar = gunzip(&bytes[..info.members[0].end as usize]);
    ensure!(
        sig_tar.len() == 512 + 512,
        "signature tar {} bytes",
        sig_tar.len()
    );
    ensure!(
        sig_tar.starts_with(format!(".SIGN.RSA.{TEST_KEY}\0").as_bytes()),
        "signature entry name"
    );
    let data_tar = gunzip(&bytes[info.members[2].start as usize..]);
    ensure!(
        data_tar[data_tar.len() - 1024..].iter().all(|b| *b == 0),
        "data tar lacks end blocks"
    );

    let mut rec = Recorder::default();
    let meta = apk::read(&w.apk, &o, &mut rec)?;
    ensure!(
        meta.name == "btfgate-test" && meta.version == "6.1.0-r0" && meta.arch == "x86_64",
        "{meta:?}"
    );
    ensure!(
        meta.signer.as_deref() == Some(TEST_KEY),
        "signer {:?}",
        meta.signer
    );
    ensure!(
        meta.file_size == bytes.len() as u64,
        "file size {}",
        meta.file_size
    );
    // root + boot lib lib/modules lib/modules/6.1.0-test …/kernel …/kernel/fs usr usr/bin = 9 dirs;
    // files: vmlinuz 4 KiB, overlay.ko 12 KiB, tool 4 KiB.
    ensure!(
        meta.installed_size == Some(9 * 4096 + 20 * 1024),
        "installed size {:?}",
        meta.installed_size
    );
    let got: Vec<(&str, &EntryKind)> = rec.entries.iter().map(|e| (e.0.as_str(), &e.1)).collect();
    let link = EntryKind::Symlink("kernel/fs/overlay.ko".into());
    let want: Vec<(&str, &EntryKind)> = vec![
        ("boot", &EntryKind::Dir),
        ("boot/vmlinuz-test", &EntryKind::File),
        ("lib", &EntryKind::Dir),
        ("lib/modules", &EntryKind::Dir),
        ("lib/modules/6.1.0-test", &EntryKind::Dir),
        ("lib/modules/6.1.0-test/kernel", &EntryKind::Dir),
        ("lib/modules/6.1.0-test/kernel/fs", &EntryKind::Dir),
        (
            "lib/modules/6.1.0-test/kernel/fs/overlay.ko",
            &EntryKind::File,
        ),
        ("lib/modules/6.1.0-test/overlay.ko", &link),
        ("usr", &EntryKind::Dir),
        ("usr/bin", &EntryKind::Dir),
        ("usr/bin/tool", &EntryKind::File),
    ];
    ensure!(got == want, "entries {got:#?}");
    let vm = rec.find("boot/vmlinuz-test").unwrap();
    ensure!(
        vm.2 == VMLINUZ.len() as u64 && vm.3 == sha1_hex(VMLINUZ),
        "vmlinuz {vm:?}"
    );
    let ko = rec
        .find("lib/modules/6.1.0-test/kernel/fs/overlay.ko")
        .unwrap();
    ensure!(
        ko.2 == 10_000 && ko.3 == sha1_hex(&[0x7f; 10_000]),
        "overlay.ko {ko:?}"
    );
    Ok(())
}

fn writer_flipped_data_caught_before_entries() -> R {
    let w = write_signed()?;
    let o = opts(&w.keys, false);
    let info = apk::inspect(&w.apk, &o)?;
    let mut bytes = fs::read(&w.apk)?;
    let d = &info.members[2];
    for off in [d.start + 10, (d.start + d.end) / 2, d.end - 1] {
        let mut b = bytes.clone();
        b[off as usize] ^= 0x01;
        fs::write(&w.apk, &b)?;
        for allow in [false, true] {
            let mut rec = Recorder::default();
            match apk::read(&w.apk, &opts(&w.keys, allow), &mut rec) {
                Err(e) => ensure!(e.phase() == "verify datahash", "offset {off}: {e}"),
                Ok(_) => return Err(format!("offset {off}: flipped data byte accepted").into()),
            }
            ensure!(
                rec.entries.is_empty(),
                "offset {off}: {} entries visited",
                rec.entries.len()
            );
        }
    }
    // A flipped control byte breaks the signature (or the gzip CRC).
    let c = &info.members[1];
    bytes[((c.start + c.end) / 2) as usize] ^= 0x01;
    fs::write(&w.apk, &bytes)?;
    ensure!(
        apk::read(&w.apk, &o, &mut Recorder::default()).is_err(),
        "flipped control byte accepted"
    );
    Ok(())
}

fn writer_unsigned_and_key_formats() -> R {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("root");
    make_tree(&root)?;
    let p = tmp.path().join("unsigned.apk");
    apk::write_apk(&root, &pkginfo(), None, &p).map_err(|e| format!("{e:#}"))?;
    let keys = tmp.path().join("keys");
    fs::create_dir(&keys)?;
    match apk::read(&p, &opts(&keys, false), &mut Recorder::default()) {
        Err(Error::Untrusted { msg, .. }) => ensure!(msg.contains("not signed"), "{msg}"),
        other => return Err(format!("expected untrusted, got {other:?}").into()),
    }
    let info = apk::inspect(&p, &opts(&keys, true))?;
    ensure!(
        info.members.len() == 2 && info.signer.is_none() && info.datahash_ok,
        "{info:?}"
    );
    let mut rec = Recorder::default();
    apk::read(&p, &opts(&keys, true), &mut rec)?;
    ensure!(rec.entries.len() == 12, "{} entries", rec.entries.len());

    // Keys: the public half as PKCS#1 "RSA PUBLIC KEY" works too; the private PEM round-trips.
    let signed = write_signed()?;
    let public = {
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::DecodePublicKey;
        rsa::PublicKey::from_public_key_pem(&key().public_pem())
            .unwrap()
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    ensure!(
        public.starts_with("-----BEGIN RSA PUBLIC KEY-----"),
        "{public}"
    );
    fs::write(signed.keys.join(TEST_KEY), public)?;
    let info = apk::inspect(&signed.apk, &opts(&signed.keys, false))?;
    ensure!(
        info.signer.as_deref() == Some(TEST_KEY),
        "PKCS#1 key: signer {:?}",
        info.signer
    );
    let again = SigningKey::from_pem("other.rsa.pub", &key().private_pem()?)?;
    ensure!(
        again.public_pem() == key().public_pem(),
        "private PEM round trip changed the key"
    );
    ensure!(again.name == "other.rsa.pub", "name {}", again.name);
    ensure!(
        SigningKey::from_pem("x", "not a key").is_err(),
        "garbage PEM accepted"
    );
    Ok(())
}

fn writer_refuses_bad_input() -> R {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("root");
    make_tree(&root)?;
    let out = tmp.path().join("x.apk");
    let mut with_size = pkginfo();
    with_size.push(("size", "1".to_string()));
    ensure!(
        apk::write_apk(&root, &with_size, None, &out).is_err(),
        "explicit size accepted"
    );
    let no_name: Vec<_> = pkginfo()
        .into_iter()
        .filter(|(k, _)| *k != "pkgname")
        .collect();
    ensure!(
        apk::write_apk(&root, &no_name, None, &out).is_err(),
        "missing pkgname accepted"
    );
    let mut newline = pkginfo();
    newline.push(("pkgdesc", "two\nlines".to_string()));
    ensure!(
        apk::write_apk(&root, &newline, None, &out).is_err(),
        "newline in value accepted"
    );
    ensure!(
        apk::write_apk(&tmp.path().join("missing"), &pkginfo(), None, &out).is_err(),
        "missing root accepted"
    );
    ensure!(!out.exists(), "a package was written despite the errors");
    let leftovers: Vec<_> = fs::read_dir(tmp.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    ensure!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Hand-made data tars with escaping paths

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

/// A raw ustar header with `name` and `link` written byte for byte (no path validation).
fn raw_header(name: &str, ty: tar::EntryType, size: u64, link: &str) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

fn pax_checksum(out: &mut Vec<u8>, sha1_hex: &str) {
    let rec = format!(" APK-TOOLS.checksum.SHA1={sha1_hex}\n");
    let rec = format!("{}{rec}", rec.len() + 2); // 2-digit length prefix
    let h = raw_header(
        "PaxHeaders/x",
        tar::EntryType::XHeader,
        rec.len() as u64,
        "",
    );
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(rec.as_bytes());
    pad(out);
}

/// A data tar with one entry: a file `name` ("hello"), or a symlink/hard link to `link`.
fn data_tar(name: &str, ty: tar::EntryType, link: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let content: &[u8] = if ty == tar::EntryType::Regular {
        b"hello"
    } else {
        b""
    };
    if ty == tar::EntryType::Regular {
        pax_checksum(&mut out, &sha1_hex(content));
    } else if ty == tar::EntryType::Symlink {
        pax_checksum(&mut out, &sha1_hex(link.as_bytes()));
    }
    out.extend_from_slice(raw_header(name, ty, content.len() as u64, link).as_bytes());
    out.extend_from_slice(content);
    pad(&mut out);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// An unsigned APK (control + data) around a hand-made data tar.
fn unsigned_apk(data_tar: &[u8]) -> Vec<u8> {
    let data = gz(data_tar);
    let control = crafted_control(&format!(
        "datahash = {}\n",
        hex::encode(Sha256::digest(&data))
    ));
    [gz(&control), data].concat()
}

/// Control tar bytes for a crafted package (no end blocks), with `extra` .PKGINFO lines.
fn crafted_control(extra: &str) -> Vec<u8> {
    let pkginfo = format!("pkgname = crafted\npkgver = 1-r0\narch = x86_64\nsize = 5\n{extra}");
    let mut control = Vec::new();
    control.extend_from_slice(
        raw_header(
            ".PKGINFO",
            tar::EntryType::Regular,
            pkginfo.len() as u64,
            "",
        )
        .as_bytes(),
    );
    control.extend_from_slice(pkginfo.as_bytes());
    pad(&mut control);
    control
}

fn legacy_without_datahash() -> R {
    // Packages without datahash: the signature covers control + data.
    let tmp = tempfile::tempdir()?;
    let keys = tmp.path().join("keys");
    fs::create_dir(&keys)?;
    fs::write(keys.join(TEST_KEY), key().public_pem())?;
    let p = tmp.path().join("legacy.apk");
    let control = gz(&crafted_control(""));
    let data = gz(&data_tar("etc/ok", tar::EntryType::Regular, ""));
    let private = {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::PrivateKey::from_pkcs8_pem(&key().private_pem()?).unwrap()
    };
    let signature = private
        .pkcs1v15_sign::<Sha1>(&[control.as_slice(), &data].concat())
        .unwrap();
    let mut sig_tar = Vec::new();
    let name = format!(".SIGN.RSA.{TEST_KEY}");
    sig_tar.extend_from_slice(
        raw_header(&name, tar::EntryType::Regular, signature.len() as u64, "").as_bytes(),
    );
    sig_tar.extend_from_slice(&signature);
    pad(&mut sig_tar);
    let signed = [gz(&sig_tar), control.clone(), data.clone()].concat();

    fs::write(&p, &signed)?;
    let info = apk::inspect(&p, &opts(&keys, false))?;
    ensure!(
        info.signer.as_deref() == Some(TEST_KEY) && !info.datahash_ok,
        "{info:?}"
    );
    let mut rec = Recorder::default();
    apk::read(&p, &opts(&keys, false), &mut rec)?;
    ensure!(rec.entries.len() == 1, "{} entries", rec.entries.len());

    // The signature covers the data: a changed data member fails it.
    let other_data = gz(&data_tar("etc/other", tar::EntryType::Regular, ""));
    fs::write(&p, [gz(&sig_tar), control.clone(), other_data].concat())?;
    for allow in [false, true] {
        match apk::inspect(&p, &opts(&keys, allow)) {
            Err(Error::Untrusted { msg, .. }) => ensure!(msg.contains("does not verify"), "{msg}"),
            other => return Err(format!("allow={allow}: expected untrusted, got {other:?}").into()),
        }
    }

    // Unsigned and without datahash: only readable when untrusted packages are allowed, and
    // the data member must still end the file.
    fs::write(&p, [control.clone(), data.clone()].concat())?;
    ensure!(
        matches!(
            apk::inspect(&p, &opts(&keys, false)),
            Err(Error::Untrusted { .. })
        ),
        "unsigned legacy package trusted"
    );
    let info = apk::inspect(&p, &opts(&keys, true))?;
    ensure!(info.signer.is_none() && !info.datahash_ok, "{info:?}");
    apk::read(&p, &opts(&keys, true), &mut Recorder::default())?;
    fs::write(&p, [control, data, b"trailing".to_vec()].concat())?;
    match apk::read(&p, &opts(&keys, true), &mut Recorder::default()) {
        Err(e) => ensure!(e.phase() == "split gzip members", "{e}"),
        Ok(_) => return Err("bytes after the data member accepted".into()),
    }
    Ok(())
}

fn escapes_refused() -> R {
    use tar::EntryType::{Link, Regular, Symlink};
    let tmp = tempfile::tempdir()?;
    let o = opts(tmp.path(), true);
    let p = tmp.path().join("crafted.apk");
    // Controls: the same construction with harmless paths is read, so refusals below are
    // about the paths.
    for (name, ty, link) in [
        ("etc/ok", Regular, ""),
        ("./etc/ok", Regular, ""),
        ("lib/link", Symlink, "../etc/ok"),
        ("lib/abs", Symlink, "/etc/ok"),
        ("lib/hard", Link, "etc/ok"),
    ] {
        fs::write(&p, unsigned_apk(&data_tar(name, ty, link)))?;
        let mut rec = Recorder::default();
        apk::read(&p, &o, &mut rec).map_err(|e| format!("control {name}: {e}"))?;
        ensure!(
            rec.entries.len() == 1,
            "control {name}: {} entries",
            rec.entries.len()
        );
    }
    for (name, ty, link) in [
        ("/etc/evil", Regular, ""),
        ("../evil", Regular, ""),
        ("etc/../../evil", Regular, ""),
        ("lib/link", Symlink, "../../etc/shadow"),
        ("link", Symlink, "/../etc/shadow"),
        ("lib/hard", Link, "../etc/shadow"),
        ("lib/hard", Link, "/etc/shadow"),
    ] {
        fs::write(&p, unsigned_apk(&data_tar(name, ty, link)))?;
        let mut rec = Recorder::default();
        match apk::read(&p, &o, &mut rec) {
            Err(Error::BadInput { msg, .. }) => {
                ensure!(msg.contains("refusing"), "{name} -> {link:?}: {msg}")
            }
            other => {
                return Err(format!("{name} -> {link:?}: expected a refusal, got {other:?}").into())
            }
        }
        ensure!(rec.entries.is_empty(), "{name}: escaping entry visited");
    }
    // A wrong APK-TOOLS.checksum.SHA1 is caught.
    let mut tar = data_tar("etc/ok", Regular, "");
    let at = tar.windows(5).position(|w| w == b"hello").unwrap();
    tar[at] = b'j';
    fs::write(&p, unsigned_apk(&tar))?;
    match apk::read(&p, &o, &mut Recorder::default()) {
        Err(e) => ensure!(e.phase() == "verify data checksum", "{e}"),
        Ok(_) => return Err("wrong content checksum accepted".into()),
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let alpine = alpine_dir();
    let fixture_trials: Vec<Case> = vec![
        ("apk::fixture::inspect", fixture_inspect),
        ("apk::fixture::read", fixture_read),
        ("apk::fixture::flipped_bytes", fixture_flipped_bytes),
        ("apk::fixture::untrusted", fixture_untrusted),
        ("apk::fixture::wrong_key_present", fixture_wrong_key_present),
        ("apk::fixture::truncated", fixture_truncated),
        ("apk::fixture::tampered_control", fixture_tampered_control),
    ];
    let plain: Vec<Case> = vec![
        ("apk::adb_is_unsupported", adb_is_unsupported),
        ("apk::garbage_is_bad_input", garbage_is_bad_input),
        ("apk::escapes_refused", escapes_refused),
        ("apk::legacy_without_datahash", legacy_without_datahash),
        ("apk::writer::round_trip", writer_round_trip),
        (
            "apk::writer::flipped_data_caught_before_entries",
            writer_flipped_data_caught_before_entries,
        ),
        (
            "apk::writer::unsigned_and_key_formats",
            writer_unsigned_and_key_formats,
        ),
        ("apk::writer::refuses_bad_input", writer_refuses_bad_input),
    ];
    let mut trials = Vec::new();
    for (name, f) in fixture_trials {
        trials.push(needs(Trial::test(name, f), &alpine));
    }
    for (name, f) in plain {
        trials.push(Trial::test(name, f));
    }
    libtest_mimic::run(&args, trials).exit();
}
