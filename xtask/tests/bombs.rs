//! Decompression bombs against the xtask binary: a package (or an Alpine index) of a few KB
//! whose member expands or claims to expand past a limit of `harness::limits` is refused as
//! bad input (exit 2) naming the file, the member and the limit, and the process refusing it
//! stays under the `bench static` memory budget. Every trial runs `cargo xtask` under GNU
//! time and prints the peak RSS it measured. Each bomb is built without ever existing
//! expanded (`harness::bomb`), in every codec the container or member accepts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::bomb::{self, Stream};
use harness::codec::Codec;
use harness::limits::{self, Limit};
use libtest_mimic::{Arguments, Failed, Trial};

type R = Result<(), Failed>;

/// The `bench static` budget (`xtask/src/bench.rs`): peak RSS under 300 MB.
const BUDGET_KB: u64 = 300 * 1000;
const GNU_TIME: &str = "/usr/bin/time";

/// A bomb on disk and how to run xtask on it.
struct Case {
    /// The package (or index mirror) file or directory.
    path: PathBuf,
    /// xtask arguments; `{}` stands for `path`.
    args: Vec<String>,
    /// What stderr must name besides the limit (the member).
    member: String,
    limit: Limit,
    _dir: tempfile::TempDir,
}

fn dir() -> Result<tempfile::TempDir, Failed> {
    Ok(tempfile::Builder::new().prefix("btfgate-bomb-").tempdir()?)
}

fn inspect(path: PathBuf, untrusted: bool) -> Vec<String> {
    let mut a = vec!["inspect".to_string()];
    if untrusted {
        a.push("--allow-untrusted".into());
    }
    a.push(path.to_string_lossy().into_owned());
    a
}

/// Runs xtask under GNU time: exit code, stderr, peak RSS in KB.
fn run(args: &[String], scratch: &Path) -> Result<(i32, String, u64), Failed> {
    let rss = scratch.join("rss");
    let (status, _, stderr) = harness::process::Cmd::new(GNU_TIME, Duration::from_secs(120))
        .env("BTFGATE_CACHE", scratch.join("cache"))
        .args(["-f", "%M", "-o"])
        .arg(&rss)
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()?;
    let text = std::fs::read_to_string(&rss)?;
    let kb = text
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("no max RSS in GNU time's output {text:?}"))?;
    Ok((
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stderr).into_owned(),
        kb,
    ))
}

/// Builds the bomb, runs xtask on it: exit 2, the file, the member and the limit named, peak
/// RSS under the budget (printed).
fn trial(name: &str, make: &dyn Fn() -> Result<Case, Failed>) -> R {
    let case = make()?;
    let bytes = disk_size(&case.path)?;
    let args: Vec<String> = case
        .args
        .iter()
        .map(|a| a.replace("{}", &case.path.to_string_lossy()))
        .collect();
    let (code, stderr, kb) = run(&args, case._dir.path())?;
    println!(
        "bomb {name}: {bytes} bytes on disk, past the {}: exit {code}, peak RSS {:.1} MB (budget {} MB)",
        case.limit,
        kb as f64 / 1000.0,
        BUDGET_KB / 1000
    );
    let file = case
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let limit = format!("harness::limits::{}", case.limit.name);
    for needle in [&file, &case.member, &limit] {
        if !stderr.contains(needle.as_str()) {
            return Err(format!("stderr does not name {needle:?}: {stderr}").into());
        }
    }
    if code != 2 {
        return Err(format!("exit {code}, want 2 (bad input): {stderr}").into());
    }
    if kb >= BUDGET_KB {
        return Err(format!("peak RSS {kb} KB is over the {BUDGET_KB} KB budget").into());
    }
    Ok(())
}

fn disk_size(p: &Path) -> Result<u64, Failed> {
    let meta = std::fs::metadata(p)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(p)? {
        total += disk_size(&e?.path())?;
    }
    Ok(total)
}

fn write(path: &Path, bytes: &[u8]) -> R {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

// ---- containers -------------------------------------------------------------------------

/// The container a data tar goes into.
#[derive(Clone, Copy)]
enum Container {
    Deb(Codec),
    Apk,
}

impl Container {
    fn codec(self) -> Codec {
        match self {
            Container::Deb(c) => c,
            Container::Apk => Codec::Gzip,
        }
    }
}

fn ext(c: Codec) -> &'static str {
    match c {
        Codec::Gzip => ".gz",
        Codec::Xz => ".xz",
        Codec::Zstd => ".zst",
        _ => "",
    }
}

/// A package in `container` whose data tar holds `path`, a file of `size` zeros.
fn package_with(
    container: Container,
    path: &str,
    size: u64,
) -> Result<(tempfile::TempDir, PathBuf), Failed> {
    let mut s = Stream::new(container.codec())?;
    if matches!(container, Container::Apk) {
        s.bytes(&bomb::apk_checksum_header()?)?;
    }
    bomb::tar_zeros(&mut s, path, size)?;
    package_of(container, bomb::tar_end(s)?)
}

/// A package in `container` whose data tar is `data` (compressed with the container's codec).
fn package_of(container: Container, data: Vec<u8>) -> Result<(tempfile::TempDir, PathBuf), Failed> {
    let d = dir()?;
    let (name, bytes) = match container {
        Container::Deb(c) => {
            let control = bomb::deb_control(c)?;
            let cname = format!("control.tar{}", ext(c));
            let dname = format!("data.tar{}", ext(c));
            ("bomb.deb", bomb::deb((&cname, &control), (&dname, &data)))
        }
        Container::Apk => ("bomb.apk", bomb::apk(&data)?),
    };
    let p = d.path().join(name);
    write(&p, &bytes)?;
    Ok((d, p))
}

fn member_case(container: Container, path: &str, limit: Limit) -> Result<Case, Failed> {
    let (d, p) = package_with(container, path, limit.max + 1)?;
    Ok(Case {
        args: inspect(p.clone(), matches!(container, Container::Apk)),
        path: p,
        member: path.into(),
        limit,
        _dir: d,
    })
}

const CONTAINERS: [(&str, Container); 4] = [
    ("deb_xz", Container::Deb(Codec::Xz)),
    ("deb_zstd", Container::Deb(Codec::Zstd)),
    ("deb_gzip", Container::Deb(Codec::Gzip)),
    ("apk_gzip", Container::Apk),
];

// ---- modules ----------------------------------------------------------------------------

/// A directory package holding one module file `name` whose content is `s`'s codec output.
fn module_dir(name: &str, s: Stream) -> Result<(tempfile::TempDir, PathBuf), Failed> {
    let d = dir()?;
    let root = d.path().join("bomb-pkg");
    let p = root.join("lib/modules/6.1.0-bomb/kernel").join(name);
    write(&p, &s.finish()?)?;
    Ok((d, root))
}

fn module_codec_case(codec: Codec) -> Result<Case, Failed> {
    let name = format!("bomb.ko{}", ext(codec));
    let mut s = Stream::new(codec)?;
    s.zeros(limits::MODULE_ELF.max + (1 << 20))?;
    let (d, root) = module_dir(&name, s)?;
    Ok(Case {
        args: inspect(root.clone(), false),
        path: root,
        member: name,
        limit: limits::MODULE_ELF,
        _dir: d,
    })
}

/// A `.ko.zst` module ELF with `sections` (and `extra` null section headers).
fn module_elf_case(sections: &[(&str, u64)], extra: u32, limit: Limit) -> Result<Case, Failed> {
    let mut s = Stream::new(Codec::Zstd)?;
    bomb::elf(&mut s, sections, extra)?;
    let (d, root) = module_dir("bomb.ko.zst", s)?;
    Ok(Case {
        args: inspect(root.clone(), false),
        path: root,
        member: "bomb.ko.zst".into(),
        limit,
        _dir: d,
    })
}

/// Modules whose `.modinfo` is ~1 MiB of plain aliases (each kept): past the module records.
fn module_records_case() -> Result<Case, Failed> {
    let d = dir()?;
    let root = d.path().join("bomb-pkg");
    let mut modinfo = Vec::new();
    for i in 0.. {
        let alias = format!("alias=a{i}\0");
        if modinfo.len() + alias.len() > (1 << 20) - 64 {
            break;
        }
        modinfo.extend_from_slice(alias.as_bytes());
    }
    for n in 0..8 {
        // The .modinfo of zeros the builder writes, then the aliases over it: build by hand.
        let mut s = Stream::new(Codec::None)?;
        bomb::elf(&mut s, &[(".modinfo", modinfo.len() as u64)], 0)?;
        let mut elf = s.finish()?;
        elf[64..64 + modinfo.len()].copy_from_slice(&modinfo);
        let zst = Codec::Zstd.compress(&elf, true)?;
        write(
            &root.join(format!("lib/modules/6.1.0-bomb/kernel/m{n}.ko.zst")),
            &zst,
        )?;
    }
    Ok(Case {
        args: inspect(root.clone(), false),
        path: root,
        member: "lib/modules/6.1.0-bomb/kernel/m".into(),
        limit: limits::MODULE_RECORDS,
        _dir: d,
    })
}

/// Modules whose `.BTF` sums past the total (each within its own limit), uncompressed in a
/// .deb's data.tar.zst (a `.ko.zst` would also be priced, slowly, by compressing its `.BTF`).
fn module_btf_total_case() -> Result<Case, Failed> {
    let each = limits::MODULE_BTF.max;
    let mut s = Stream::new(Codec::Zstd)?;
    // The ELF's length, from a throwaway stream.
    let len = bomb::elf(&mut Stream::new(Codec::Xz)?, &[(".BTF", each)], 0)?;
    for n in 0..=limits::MODULE_BTF_TOTAL.max / each {
        let path = format!("lib/modules/6.1.0-bomb/kernel/m{n:03}.ko");
        s.bytes(&bomb::tar_header(&path, len)?)?;
        bomb::elf(&mut s, &[(".BTF", each)], 0)?;
        s.zeros(len.div_ceil(512) * 512 - len)?;
    }
    let (d, p) = package_of(Container::Deb(Codec::Zstd), bomb::tar_end(s)?)?;
    Ok(Case {
        args: inspect(p.clone(), false),
        path: p,
        member: "lib/modules/6.1.0-bomb/kernel/m".into(),
        limit: limits::MODULE_BTF_TOTAL,
        _dir: d,
    })
}

fn release_dirs_case() -> Result<Case, Failed> {
    let d = dir()?;
    let root = d.path().join("bomb-pkg");
    for n in 0..=limits::RELEASE_DIRS.max {
        std::fs::create_dir_all(root.join(format!("lib/modules/6.1.{n}")))?;
    }
    Ok(Case {
        args: inspect(root.clone(), false),
        path: root,
        member: "lib/modules/6.1.".into(),
        limit: limits::RELEASE_DIRS,
        _dir: d,
    })
}

// ---- the kernel image -------------------------------------------------------------------

/// A directory package whose `boot/vmlinuz-bomb` is a bzImage with a `codec` payload of
/// `content` (written by `fill`).
fn image_dir(codec: Codec, fill: impl FnOnce(&mut Stream) -> R) -> Result<Case, Failed> {
    let mut s = Stream::new(codec)?;
    fill(&mut s)?;
    let size = s.len();
    let mut payload = s.finish()?;
    if codec != Codec::Gzip {
        payload.extend_from_slice(&(size as u32).to_le_bytes());
    }
    let d = dir()?;
    let root = d.path().join("bomb-pkg");
    write(&root.join("boot/vmlinuz-bomb"), &bomb::bzimage(&payload))?;
    Ok(Case {
        args: inspect(root.clone(), false),
        path: root,
        member: "vmlinux".into(),
        limit: limits::VMLINUX,
        _dir: d,
    })
}

fn vmlinux_case(codec: Codec) -> Result<Case, Failed> {
    image_dir(codec, |s| {
        s.zeros(limits::VMLINUX.max + (1 << 20))?;
        Ok(())
    })
}

fn vmlinux_btf_case() -> Result<Case, Failed> {
    let mut c = image_dir(Codec::Zstd, |s| {
        bomb::elf(s, &[(".BTF", limits::VMLINUX_BTF.max + 1)], 0)?;
        Ok(())
    })?;
    c.limit = limits::VMLINUX_BTF;
    Ok(c)
}

// ---- APK and .deb members ----------------------------------------------------------------

/// An APK whose first gzip member is a tar of `name` holding `size` zeros.
fn apk_first_member_case(name: &str, size: u64, limit: Limit) -> Result<Case, Failed> {
    let d = dir()?;
    let mut s = Stream::new(Codec::Gzip)?;
    bomb::tar_zeros(&mut s, name, size)?;
    let mut bytes = s.finish()?;
    let mut data = Stream::new(Codec::Gzip)?;
    data.bytes(&[0u8; 1024])?;
    bytes.extend(data.finish()?);
    let p = d.path().join("bomb.apk");
    write(&p, &bytes)?;
    Ok(Case {
        args: inspect(p.clone(), true),
        path: p,
        member: "gzip member 0".into(),
        limit,
        _dir: d,
    })
}

/// A .deb whose `control.tar<codec>` holds `name` of `size` zeros.
fn deb_control_case(codec: Codec, name: &str, size: u64, limit: Limit) -> Result<Case, Failed> {
    let d = dir()?;
    let mut s = Stream::new(codec)?;
    bomb::tar_zeros(&mut s, name, size)?;
    let control = bomb::tar_end(s)?;
    let mut data = Stream::new(codec)?;
    data.bytes(&[0u8; 1024])?;
    let data = data.finish()?;
    let cname = format!("control.tar{}", ext(codec));
    let dname = format!("data.tar{}", ext(codec));
    let p = d.path().join("bomb.deb");
    write(&p, &bomb::deb((&cname, &control), (&dname, &data)))?;
    Ok(Case {
        args: inspect(p.clone(), false),
        path: p,
        member: if name.ends_with("control") {
            "control file".into()
        } else {
            cname
        },
        limit,
        _dir: d,
    })
}

/// A data tar whose member is preceded by a GNU long name or PAX header of 512 MiB of zeros
/// (which the `tar` crate alone would read whole into memory).
fn tar_extension_case(container: Container, kind: tar::EntryType) -> Result<Case, Failed> {
    let size = 512 << 20;
    let mut s = Stream::new(container.codec())?;
    s.bytes(&bomb::tar_header_typed("././@LongLink", size, kind)?)?;
    s.zeros(size)?;
    bomb::tar_zeros(&mut s, "boot/x", 0)?;
    let (d, p) = package_of(container, bomb::tar_end(s)?)?;
    Ok(Case {
        args: inspect(p.clone(), matches!(container, Container::Apk)),
        path: p,
        member: "tar header at offset 0".into(),
        limit: limits::TAR_EXTENSION,
        _dir: d,
    })
}

// ---- APKINDEX ---------------------------------------------------------------------------

/// A `file://` mirror whose v3.16 main x86_64 `APKINDEX.tar.gz` is one gzip member: a tar of
/// `name` holding `size` zeros; xtask fetch alpine --list on it.
fn apkindex_case(name: &str, size: u64, limit: Limit) -> Result<Case, Failed> {
    let d = dir()?;
    let mirror = d.path().join("mirror");
    let repo = mirror.join("v3.16/main/x86_64");
    let mut s = Stream::new(Codec::Gzip)?;
    bomb::tar_zeros(&mut s, name, size)?;
    let index = repo.join("APKINDEX.tar.gz");
    write(&index, &s.finish()?)?;
    let keys = d.path().join("keys");
    std::fs::create_dir_all(&keys)?;
    Ok(Case {
        args: vec![
            "fetch".into(),
            "alpine".into(),
            "--mirror".into(),
            format!("file://{}", mirror.display()),
            "--branch".into(),
            "v3.16".into(),
            "--keys-dir".into(),
            keys.to_string_lossy().into_owned(),
            "--list".into(),
        ],
        path: index,
        member: "gzip member 0".into(),
        limit,
        _dir: d,
    })
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let need: Result<(), String> = if Path::new(GNU_TIME).is_file() {
        Ok(())
    } else {
        Err(format!("{GNU_TIME} missing (Debian package time)"))
    };
    type Make = Box<dyn Fn() -> Result<Case, Failed> + Send + Sync>;
    let mut cases: Vec<(String, Make)> = Vec::new();
    let mut add = |name: String, make: Make| cases.push((name, make));
    for codec in [Codec::Gzip, Codec::Xz, Codec::Zstd] {
        add(
            format!("module::elf_{}", codec.name()),
            Box::new(move || module_codec_case(codec)),
        );
    }
    for (n, c) in CONTAINERS {
        add(
            format!("module::in_{n}"),
            Box::new(move || {
                member_case(
                    c,
                    "lib/modules/6.1.0-bomb/kernel/bomb.ko",
                    limits::MODULE_ELF,
                )
            }),
        );
        add(
            format!("image::in_{n}"),
            Box::new(move || member_case(c, "boot/vmlinuz-bomb", limits::IMAGE)),
        );
        add(
            format!("config::in_{n}"),
            Box::new(move || member_case(c, "boot/config-bomb", limits::CONFIG)),
        );
        add(
            format!("tar::gnu_long_name_in_{n}"),
            Box::new(move || tar_extension_case(c, tar::EntryType::GNULongName)),
        );
        add(
            format!("tar::pax_header_in_{n}"),
            Box::new(move || tar_extension_case(c, tar::EntryType::XHeader)),
        );
    }
    for codec in [Codec::Gzip, Codec::Xz, Codec::Zstd, Codec::Lz4] {
        add(
            format!("vmlinux::payload_{}", codec.name()),
            Box::new(move || vmlinux_case(codec)),
        );
    }
    add("vmlinux::btf".into(), Box::new(vmlinux_btf_case));
    add(
        "module::btf".into(),
        Box::new(|| {
            module_elf_case(
                &[(".BTF", limits::MODULE_BTF.max + 1)],
                0,
                limits::MODULE_BTF,
            )
        }),
    );
    add(
        "module::modinfo".into(),
        Box::new(|| module_elf_case(&[(".modinfo", limits::MODINFO.max + 1)], 0, limits::MODINFO)),
    );
    add(
        "module::section_headers".into(),
        Box::new(|| module_elf_case(&[], limits::ELF_SECTIONS.max as u32, limits::ELF_SECTIONS)),
    );
    add(
        "module::section_names".into(),
        Box::new(|| {
            let long = "n".repeat(limits::ELF_SECTION_NAMES.max as usize);
            module_elf_case(&[(long.as_str(), 0)], 0, limits::ELF_SECTION_NAMES)
        }),
    );
    add("module::records".into(), Box::new(module_records_case));
    add("module::btf_total".into(), Box::new(module_btf_total_case));
    add("module::release_dirs".into(), Box::new(release_dirs_case));
    add(
        "apk::control_member_gzip".into(),
        Box::new(|| apk_first_member_case(".PKGINFO", 2 << 20, limits::APK_CONTROL)),
    );
    add(
        "apk::signature_member_gzip".into(),
        Box::new(|| {
            apk_first_member_case(".SIGN.RSA.bomb.rsa.pub", 1 << 20, limits::APK_SIGNATURE)
        }),
    );
    for codec in [Codec::Xz, Codec::Zstd, Codec::Gzip] {
        add(
            format!("deb::control_tar_{}", codec.name()),
            Box::new(move || {
                deb_control_case(
                    codec,
                    "./md5sums",
                    limits::DEB_CONTROL_TAR.max + 1,
                    limits::DEB_CONTROL_TAR,
                )
            }),
        );
    }
    add(
        "deb::control_file_xz".into(),
        Box::new(|| {
            deb_control_case(
                Codec::Xz,
                "./control",
                limits::DEB_CONTROL.max + 1,
                limits::DEB_CONTROL,
            )
        }),
    );
    add(
        "apkindex::index_member_gzip".into(),
        Box::new(|| apkindex_case("APKINDEX", limits::APKINDEX.max + 1, limits::APKINDEX)),
    );
    add(
        "apkindex::signature_member_gzip".into(),
        Box::new(|| {
            apkindex_case(
                ".SIGN.RSA.bomb.rsa.pub",
                limits::APK_SIGNATURE.max + 1,
                limits::APK_SIGNATURE,
            )
        }),
    );
    let trials = cases
        .into_iter()
        .map(|(name, make)| {
            let n = name.clone();
            harness::fixtures::needs(
                Trial::test(format!("bomb::{name}"), move || trial(&n, &make)),
                &need,
            )
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
