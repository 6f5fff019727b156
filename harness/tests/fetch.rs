//! Fetching from an Alpine mirror without the internet: a mirror served on 127.0.0.1 (real APK
//! v2 packages and a real-format APKINDEX signed by a test key) shows the happy path, the
//! cache, concurrent fetches and every refusal, each leaving nothing in the cache; the real
//! signed Alpine indexes of the shared fixtures are listed and verified through the same code
//! (libtest-mimic; trials needing the shared Alpine data are ignored at list time when absent).
//!
//! One file because: cargo builds each `tests/*.rs` as its own binary; the trials share the
//! local mirror server and its signed index builders.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use support::{Case, R};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use harness::fetch::alpine::{Fetcher, Repo};
use harness::fetch::{FetchError, Store};
use harness::fixtures::{alpine_dir, needs};
use harness::package::apk::{self, trust, SigningKey};
use harness::package::apkindex::{self, IndexEntry};
use harness::package::ReadOptions;
use libtest_mimic::{Arguments, Trial};

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 mirror with fault injection (test code: it serves files from memory and can
// truncate or cut a transfer, which no off-the-shelf static server does on demand).

#[derive(Clone)]
enum Serve {
    /// The bytes, whole.
    Full(Vec<u8>),
    /// Only the first n bytes, announced as such (a truncated file on the mirror).
    Short(Vec<u8>, usize),
    /// The whole length announced, the connection closed after n bytes (a cut transfer).
    Cut(Vec<u8>, usize),
}

#[derive(Default)]
struct Routes {
    files: HashMap<String, Serve>,
    hits: HashMap<String, usize>,
}

struct Mirror {
    url: String,
    routes: Arc<Mutex<Routes>>,
}

impl Mirror {
    fn start() -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(Mutex::new(Routes::default()));
        let r = routes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || serve(stream, &r));
            }
        });
        Mirror { url, routes }
    }

    fn put(&self, path: &str, how: Serve) {
        self.routes
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), how);
    }

    fn hits(&self, path: &str) -> usize {
        *self.routes.lock().unwrap().hits.get(path).unwrap_or(&0)
    }
}

fn serve(stream: TcpStream, routes: &Mutex<Routes>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let how = {
        let mut r = routes.lock().unwrap();
        *r.hits.entry(path.clone()).or_default() += 1;
        r.files.get(&path).cloned()
    };
    let mut out = stream;
    let (status, announced, body): (&str, usize, Vec<u8>) = match how {
        None => ("404 Not Found", 0, Vec::new()),
        Some(Serve::Full(b)) => ("200 OK", b.len(), b),
        Some(Serve::Short(b, n)) => ("200 OK", n, b[..n].to_vec()),
        Some(Serve::Cut(b, n)) => ("200 OK", b.len(), b[..n].to_vec()),
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
    );
    let _ = out.write_all(&body);
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// Packages and indexes made for the mirror

const BRANCH: &str = "v3.99";
const TEST_KEY: &str = "btfgate-mirror-test.rsa.pub";

fn key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(TEST_KEY, 2048).unwrap())
}

fn other_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate("someone-else.rsa.pub", 2048).unwrap())
}

/// A signed APK named `name` for `arch`, with one file; its bytes and index entry.
fn package(dir: &Path, name: &str, version: &str, arch: &str) -> (Vec<u8>, IndexEntry) {
    let root = dir.join(format!("{name}-{arch}-root"));
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(
        root.join("boot").join(format!("config-{version}")),
        format!("CONFIG_DEBUG_INFO_BTF=y\n# {name}\n"),
    )
    .unwrap();
    let out = dir.join(format!("{name}-{version}-{arch}.apk"));
    apk::write_apk(
        &root,
        &[
            ("pkgname", name.to_string()),
            ("pkgver", version.to_string()),
            ("arch", arch.to_string()),
            ("pkgdesc", format!("test {name}")),
        ],
        Some(key()),
        &out,
    )
    .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let any = ReadOptions {
        keys_dir: dir.join("no-keys"),
        allow_untrusted: true,
    };
    let info = apk::inspect(&out, &any).unwrap();
    let entry = IndexEntry {
        checksum: info.identity,
        name: name.into(),
        version: version.into(),
        arch: arch.into(),
        size: bytes.len() as u64,
        installed_size: info.pkginfo.get("size").unwrap().parse().unwrap(),
        description: format!("test {name}"),
        origin: Some(name.into()),
        build_time: Some(1_700_000_000),
        commit: None,
        depends: vec![],
        line: 0,
    };
    (bytes, entry)
}

fn index_bytes(dir: &Path, entries: &[IndexEntry], key: Option<&SigningKey>) -> Vec<u8> {
    let p = dir.join("APKINDEX.tar.gz");
    apkindex::write_index(entries, "v3.99.0-test", key, &p).unwrap();
    std::fs::read(p).unwrap()
}

/// One test's world: a mirror, a cache and a keys dir trusting the test key.
struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    mirror: Mirror,
    cache: PathBuf,
    keys: PathBuf,
    virt: (Vec<u8>, IndexEntry),
    lts: (Vec<u8>, IndexEntry),
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(keys.join(TEST_KEY), key().public_pem()).unwrap();
        let virt = package(&dir, "linux-virt", "6.12.20-r0", "x86_64");
        let lts = package(&dir, "linux-lts", "6.12.20-r0", "x86_64");
        let w = World {
            mirror: Mirror::start(),
            cache: dir.join("cache"),
            keys,
            virt,
            lts,
            dir,
            _tmp: tmp,
        };
        w.serve_index(&[w.virt.1.clone(), w.lts.1.clone()], Some(key()));
        for (bytes, e) in [&w.virt, &w.lts] {
            w.mirror
                .put(&w.path(&e.file_name()), Serve::Full(bytes.clone()));
        }
        w
    }

    fn path(&self, file: &str) -> String {
        format!("/alpine/{BRANCH}/main/x86_64/{file}")
    }

    fn serve_index(&self, entries: &[IndexEntry], key: Option<&SigningKey>) {
        let b = index_bytes(&self.dir, entries, key);
        self.mirror
            .put(&self.path("APKINDEX.tar.gz"), Serve::Full(b));
    }

    fn fetcher(&self) -> Fetcher {
        Fetcher::new(
            Repo {
                mirror: format!("{}/alpine", self.mirror.url),
                branch: BRANCH.into(),
                ..Repo::default()
            },
            self.keys.clone(),
            Store::new(&self.cache),
        )
    }

    fn fetch(&self, spec: &str) -> Result<PathBuf, FetchError> {
        let f = self.fetcher();
        let idx = f.index()?;
        let e = f.pick(&idx, spec)?.clone();
        f.fetch(&e)
    }

    /// Files in the cache other than lock files: after a refusal there must be none.
    fn cached_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.cache.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_none_or(|x| x != "lock") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Fetching `spec` fails with an error of kind `kind` mentioning `needle`, and leaves
    /// nothing in the cache.
    fn refused(&self, spec: &str, kind: &str, needle: &str) -> R {
        let e = match self.fetch(spec) {
            Ok(p) => {
                return Err(format!("fetched {} although it should be refused", p.display()).into())
            }
            Err(e) => e,
        };
        let got_kind = match &e {
            FetchError::Unavailable { .. } => "unavailable",
            FetchError::NotFound { .. } => "not found",
            FetchError::Refused { .. } => "refused",
            FetchError::Cache { .. } => "cache",
        };
        ensure!(
            got_kind == kind,
            "expected a {kind} error, got {got_kind}: {e}"
        );
        ensure!(
            e.to_string().contains(needle),
            "error does not say {needle:?}: {e}"
        );
        let left = self.cached_files();
        ensure!(
            left.is_empty(),
            "the refusal left files in the cache: {left:?}"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Local mirror trials

fn happy_path() -> R {
    let w = World::new();
    let p = w.fetch("linux-virt")?;
    ensure!(
        std::fs::read(&p)? == w.virt.0,
        "stored bytes differ from the served package"
    );
    ensure!(
        p.starts_with(w.cache.join("sha256")),
        "not in the content-addressed store: {}",
        p.display()
    );
    let link = w.cache.join(format!(
        "alpine/{BRANCH}/main/x86_64/linux-virt-6.12.20-r0.apk"
    ));
    ensure!(
        std::fs::canonicalize(&link)? == p,
        "index link {} does not point at the blob",
        link.display()
    );
    let files = w.cached_files();
    ensure!(
        files.len() == 2,
        "expected the blob and its link, found {files:?}"
    );
    // The stored package reads as a kernel package with the test key trusted.
    let info = apk::inspect(
        &p,
        &ReadOptions {
            keys_dir: w.keys.clone(),
            allow_untrusted: false,
        },
    )?;
    ensure!(
        info.signer.as_deref() == Some(TEST_KEY),
        "signer {:?}",
        info.signer
    );
    // A second fetch verifies the cached file and downloads nothing.
    let pkg = w.path("linux-virt-6.12.20-r0.apk");
    ensure!(w.mirror.hits(&pkg) == 1, "hits {}", w.mirror.hits(&pkg));
    let again = w.fetch("linux-virt=6.12.20-r0")?;
    ensure!(again == p, "second fetch gave {}", again.display());
    ensure!(
        w.mirror.hits(&pkg) == 1,
        "the cached package was downloaded again"
    );
    Ok(())
}

fn list_reads_the_index() -> R {
    let w = World::new();
    let f = w.fetcher();
    let idx = f.index()?;
    ensure!(
        idx.signer.as_deref() == Some(TEST_KEY),
        "signer {:?}",
        idx.signer
    );
    ensure!(
        idx.description.as_deref() == Some("v3.99.0-test"),
        "{:?}",
        idx.description
    );
    let e = f.pick(&idx, "linux-lts")?;
    ensure!(e.size == w.lts.0.len() as u64, "S: {}", e.size);
    ensure!(e.installed_size > 0, "I: {}", e.installed_size);
    ensure!(
        w.cached_files().is_empty(),
        "--list must store nothing: {:?}",
        w.cached_files()
    );
    let miss = f.pick(&idx, "linux-edge").unwrap_err();
    ensure!(miss.to_string().contains("no such package"), "{miss}");
    let wrong = f.pick(&idx, "linux-lts=6.1.0-r0").unwrap_err();
    ensure!(wrong.to_string().contains("6.12.20-r0"), "{wrong}");
    Ok(())
}

fn bad_index_signature() -> R {
    let w = World::new();
    // The signature member of a good index, followed by the index member of another one.
    let good = index_bytes(&w.dir, std::slice::from_ref(&w.virt.1), Some(key()));
    let sig_len = gzip_member_len(&good);
    let mut evil_entry = w.virt.1.clone();
    evil_entry.version = "6.12.21-r0".into();
    let other = index_bytes(&w.dir, &[evil_entry], Some(key()));
    let other_sig = gzip_member_len(&other);
    let mut bytes = good[..sig_len].to_vec();
    bytes.extend_from_slice(&other[other_sig..]);
    w.mirror.put(&w.path("APKINDEX.tar.gz"), Serve::Full(bytes));
    w.refused("linux-virt", "refused", "does not verify")
}

fn untrusted_index_key() -> R {
    let w = World::new();
    w.serve_index(std::slice::from_ref(&w.virt.1), Some(other_key()));
    w.refused("linux-virt", "refused", "no such key in keys dir")?;
    w.serve_index(std::slice::from_ref(&w.virt.1), None);
    w.refused("linux-virt", "refused", "not signed")
}

fn wrong_checksum() -> R {
    let w = World::new();
    // The index says linux-virt is the package whose control member is linux-lts's.
    let mut e = w.virt.1.clone();
    e.checksum = w.lts.1.checksum.clone();
    w.serve_index(&[e], Some(key()));
    w.refused(
        "linux-virt",
        "refused",
        "the index entry (APKINDEX line 1) says C:",
    )
}

fn truncated_package() -> R {
    let w = World::new();
    let (bytes, e) = &w.virt;
    w.mirror.put(
        &w.path(&e.file_name()),
        Serve::Short(bytes.clone(), bytes.len() / 2),
    );
    w.refused("linux-virt", "refused", "the server announces")?;
    w.mirror.put(
        &w.path(&e.file_name()),
        Serve::Cut(bytes.clone(), bytes.len() / 2),
    );
    w.refused("linux-virt", "unavailable", "interrupted after")
}

fn corrupted_package() -> R {
    let w = World::new();
    let (bytes, e) = &w.virt;
    let mut bad = bytes.clone();
    let n = bad.len() - 100;
    bad[n] ^= 0x01;
    w.mirror.put(&w.path(&e.file_name()), Serve::Full(bad));
    w.refused("linux-virt", "refused", "datahash")
}

fn wrong_arch() -> R {
    let w = World::new();
    // An aarch64 entry in the x86_64 repository: the index is refused.
    let (arm_bytes, arm) = package(&w.dir, "linux-rpi", "6.12.20-r0", "aarch64");
    w.serve_index(&[w.virt.1.clone(), arm.clone()], Some(key()));
    w.refused(
        "linux-virt",
        "refused",
        "is for arch aarch64, this repository is x86_64",
    )?;
    // An index entry that claims x86_64 for an aarch64 package: its .PKGINFO gives it away.
    let mut lie = arm.clone();
    lie.arch = "x86_64".into();
    w.serve_index(&[lie.clone()], Some(key()));
    w.mirror
        .put(&w.path(&lie.file_name()), Serve::Full(arm_bytes));
    w.refused("linux-rpi", "refused", ".PKGINFO arch = \"aarch64\"")
}

fn missing_package_and_dead_mirror() -> R {
    let w = World::new();
    w.mirror
        .routes
        .lock()
        .unwrap()
        .files
        .remove(&w.path(&w.virt.1.file_name()));
    w.refused("linux-virt", "not found", "HTTP 404")?;
    w.refused("linux-edge", "not found", "no such package")?;
    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = Fetcher::new(
        Repo {
            mirror: format!("http://127.0.0.1:{port}/alpine"),
            branch: BRANCH.into(),
            ..Repo::default()
        },
        w.keys.clone(),
        Store::new(&w.cache),
    );
    match f.index() {
        Err(FetchError::Unavailable { .. }) => Ok(()),
        other => Err(format!("expected unavailable, got {other:?}").into()),
    }
}

fn concurrent_fetches() -> R {
    let w = World::new();
    let results: Vec<Result<PathBuf, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| w.fetch("linux-lts").map_err(|e| e.to_string())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let paths: Vec<PathBuf> = results.into_iter().collect::<Result<_, _>>()?;
    ensure!(
        paths.windows(2).all(|p| p[0] == p[1]),
        "different paths: {paths:?}"
    );
    ensure!(std::fs::read(&paths[0])? == w.lts.0, "stored bytes differ");
    let pkg = w.path(&w.lts.1.file_name());
    ensure!(
        w.mirror.hits(&pkg) == 1,
        "downloaded {} times, once expected",
        w.mirror.hits(&pkg)
    );
    let files = w.cached_files();
    ensure!(
        files.len() == 2,
        "expected one blob and one link, found {files:?}"
    );
    Ok(())
}

/// Length of the first gzip member of `bytes`.
fn gzip_member_len(bytes: &[u8]) -> usize {
    let mut r = std::io::Cursor::new(bytes);
    let mut d = flate2::bufread::GzDecoder::new(&mut r);
    std::io::copy(&mut d, &mut std::io::sink()).unwrap();
    drop(d);
    r.position() as usize
}

// ---------------------------------------------------------------------------------------------
// Real signed Alpine indexes (shared fixtures), through a file:// mirror

/// A mirror directory whose `<branch>/main/<arch>/APKINDEX.tar.gz` is the fixture `index`.
fn file_mirror(tmp: &Path, branch: &str, arch: &str, index: &str) -> String {
    let d = tmp.join("mirror").join(branch).join("main").join(arch);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink(
        alpine_dir().unwrap().join("fixtures").join(index),
        d.join("APKINDEX.tar.gz"),
    )
    .unwrap();
    format!("file://{}", tmp.join("mirror").display())
}

fn real_fetcher(mirror: String, branch: &str, arch: &str, keys: PathBuf, cache: &Path) -> Fetcher {
    Fetcher::new(
        Repo {
            mirror,
            branch: branch.into(),
            repo: "main".into(),
            arch: arch.into(),
        },
        keys,
        Store::new(cache),
    )
}

/// A fetcher of `<tmp>/mirror` (a [`file_mirror`] serving the fixture `index`) trusting `keys`,
/// caching in `<tmp>/c`.
fn fixture_fetcher(tmp: &Path, branch: &str, arch: &str, index: &str, keys: PathBuf) -> Fetcher {
    let m = file_mirror(tmp, branch, arch, index);
    real_fetcher(m, branch, arch, keys, &tmp.join("c"))
}

fn real_index_x86_64() -> R {
    let tmp = tempfile::tempdir()?;
    let f = fixture_fetcher(
        tmp.path(),
        "v3.16",
        "x86_64",
        "APKINDEX-v3.16-main-x86_64.tar.gz",
        alpine_dir()?.join("keys"),
    );
    let idx = f.index()?;
    ensure!(
        idx.signer.as_deref() == Some("alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"),
        "signer {:?}",
        idx.signer
    );
    ensure!(idx.entries.len() == 4929, "{} entries", idx.entries.len());
    ensure!(
        idx.description.as_deref() == Some("v3.16.3-13-g4d933a1fa3"),
        "{:?}",
        idx.description
    );
    let lts = f.pick(&idx, "linux-lts")?;
    ensure!(
        (lts.version.as_str(), lts.size, lts.installed_size) == ("5.15.78-r0", 77414844, 96276480),
        "{lts:?}"
    );
    ensure!(
        lts.checksum == "Q1ro6eW5joyaQST2qgK+fcT8yOmNA=",
        "C:{}",
        lts.checksum
    );
    let virt = f.pick(&idx, "linux-virt")?;
    ensure!(
        (virt.size, virt.installed_size) == (27630954, 34557952),
        "{virt:?}"
    );
    Ok(())
}

fn real_index_aarch64() -> R {
    let tmp = tempfile::tempdir()?;
    let f = fixture_fetcher(
        tmp.path(),
        "v3.17",
        "aarch64",
        "APKINDEX-v3.17-main-aarch64.tar.gz",
        alpine_dir()?.join("keys"),
    );
    let idx = f.index()?;
    ensure!(
        idx.signer.as_deref() == Some("alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub"),
        "signer {:?}",
        idx.signer
    );
    let lts = f.pick(&idx, "linux-lts")?;
    ensure!(
        (lts.version.as_str(), lts.size) == ("5.15.113-r0", 67685900),
        "{lts:?}"
    );
    Ok(())
}

fn real_index_refusals() -> R {
    let tmp = tempfile::tempdir()?;
    // The x86_64 index served as aarch64 (go-apk's README makes exactly this mistake).
    let e = fixture_fetcher(
        tmp.path(),
        "v3.16",
        "aarch64",
        "APKINDEX-v3.16-main-x86_64.tar.gz",
        alpine_dir()?.join("keys"),
    )
    .index()
    .unwrap_err();
    ensure!(
        e.to_string()
            .contains("is for arch x86_64, this repository is aarch64"),
        "{e}"
    );
    // Without Alpine's keys the real index is untrusted.
    let empty = tmp.path().join("no-keys");
    std::fs::create_dir_all(&empty)?;
    let e = fixture_fetcher(
        tmp.path(),
        "v3.16",
        "x86_64",
        "APKINDEX-v3.16-main-x86_64.tar.gz",
        empty,
    )
    .index()
    .unwrap_err();
    ensure!(
        e.to_string().contains("6165ee59.rsa.pub but no such key"),
        "{e}"
    );
    Ok(())
}

/// Why the default trust is not btfgate's bundled keys on this host (its `/etc/apk/keys` exists).
fn bundled_is_the_default() -> Result<(), String> {
    match Path::new(trust::HOST_KEYS).is_dir() {
        false => Ok(()),
        true => Err(format!(
            "{} exists: the default trust is the host's, not btfgate's bundled keys",
            trust::HOST_KEYS
        )),
    }
}

/// With no `/etc/apk/keys`, the default trust is btfgate's bundled keys (in this binary's
/// temporary cache): the real signed x86_64 and aarch64 indexes verify with them, naming the
/// key, through the fetcher and through `ReadOptions::default()`.
fn real_indexes_default_trust() -> R {
    let t = trust::resolve(None)?;
    ensure!(
        t == trust::Trust::Bundled(trust::bundled_dir()),
        "default trust {t:?}"
    );
    ensure!(
        ReadOptions::default().keys_dir == t.dir(),
        "ReadOptions::default() trusts {}",
        ReadOptions::default().keys_dir.display()
    );
    let alpine = alpine_dir()?;
    for (branch, arch, index, signer) in [
        (
            "v3.16",
            "x86_64",
            "APKINDEX-v3.16-main-x86_64.tar.gz",
            "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub",
        ),
        (
            "v3.17",
            "aarch64",
            "APKINDEX-v3.17-main-aarch64.tar.gz",
            "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub",
        ),
    ] {
        let tmp = tempfile::tempdir()?;
        let f = fixture_fetcher(tmp.path(), branch, arch, index, t.dir().to_path_buf());
        let idx = f.index()?;
        ensure!(idx.signer.as_deref() == Some(signer), "{index}: {idx:?}");
        let direct = apkindex::read_index(
            &alpine.join("fixtures").join(index),
            &ReadOptions::default(),
        )?;
        ensure!(
            direct.signer.as_deref() == Some(signer),
            "{index}: {:?}",
            direct.signer
        );
    }
    Ok(())
}

/// The control of the default trust: an index signed by a key btfgate does not carry (one the
/// test makes) is refused as untrusted, though it verifies once that key is trusted.
fn default_trust_refuses_other_keys() -> R {
    let w = World::new();
    let mut f = w.fetcher();
    ensure!(
        f.index().is_ok(),
        "the control: trusted, the index verifies"
    );
    f.read = ReadOptions::default();
    let e = f.index().unwrap_err();
    ensure!(
        matches!(e, FetchError::Refused { .. })
            && e.to_string().contains("untrusted")
            && e.to_string()
                .contains(&format!("key id {TEST_KEY} but no such key in keys dir")),
        "{e}"
    );
    ensure!(w.cached_files().is_empty(), "{:?}", w.cached_files());
    Ok(())
}

/// The real signed baselayout package, listed in a test-signed index, fetched and verified
/// against its real Alpine signature.
fn real_package_through_mirror() -> R {
    let tmp = tempfile::tempdir()?;
    let alpine = alpine_dir()?;
    let d = tmp.path().join("mirror/v3.16/main/aarch64");
    std::fs::create_dir_all(&d)?;
    let apk_name = "alpine-baselayout-3.2.0-r23.apk";
    std::fs::copy(
        alpine.join("fixtures/alpine-v3.16-aarch64-alpine-baselayout-3.2.0-r23.apk"),
        d.join(apk_name),
    )?;
    let entry = IndexEntry {
        checksum: "Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc=".into(),
        name: "alpine-baselayout".into(),
        version: "3.2.0-r23".into(),
        arch: "aarch64".into(),
        size: 11012,
        installed_size: 339968,
        description: "Alpine base dir structure and init scripts".into(),
        origin: None,
        build_time: None,
        commit: None,
        depends: vec![],
        line: 0,
    };
    apkindex::write_index(&[entry], "test", Some(key()), &d.join("APKINDEX.tar.gz"))?;
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys)?;
    std::fs::write(keys.join(TEST_KEY), key().public_pem())?;
    let real_key = "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub";
    std::fs::copy(alpine.join("keys").join(real_key), keys.join(real_key))?;
    let f = real_fetcher(
        format!("file://{}", tmp.path().join("mirror").display()),
        "v3.16",
        "aarch64",
        keys,
        &tmp.path().join("c"),
    );
    let idx = f.index()?;
    let e = f.pick(&idx, "alpine-baselayout")?.clone();
    let p = f.fetch(&e)?;
    let info = apk::inspect(
        &p,
        &ReadOptions {
            keys_dir: alpine.join("keys"),
            allow_untrusted: false,
        },
    )?;
    ensure!(
        info.signer.as_deref() == Some(real_key),
        "signer {:?}",
        info.signer
    );
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let alpine = alpine_dir();
    let local: Vec<Case> = vec![
        ("fetch::mirror::happy_path", happy_path),
        ("fetch::mirror::list_reads_the_index", list_reads_the_index),
        (
            "fetch::mirror::refuses_bad_index_signature",
            bad_index_signature,
        ),
        (
            "fetch::mirror::refuses_untrusted_index_key",
            untrusted_index_key,
        ),
        ("fetch::mirror::refuses_wrong_checksum", wrong_checksum),
        (
            "fetch::mirror::refuses_truncated_package",
            truncated_package,
        ),
        (
            "fetch::mirror::refuses_corrupted_package",
            corrupted_package,
        ),
        ("fetch::mirror::refuses_wrong_arch", wrong_arch),
        (
            "fetch::mirror::missing_package_and_dead_mirror",
            missing_package_and_dead_mirror,
        ),
        ("fetch::mirror::concurrent_fetches", concurrent_fetches),
        (
            "fetch::mirror::default_trust_refuses_other_keys",
            default_trust_refuses_other_keys,
        ),
    ];
    let real: Vec<Case> = vec![
        ("fetch::alpine_fixtures::index_x86_64", real_index_x86_64),
        ("fetch::alpine_fixtures::index_aarch64", real_index_aarch64),
        ("fetch::alpine_fixtures::refusals", real_index_refusals),
        (
            "fetch::alpine_fixtures::real_package",
            real_package_through_mirror,
        ),
    ];
    let mut trials: Vec<Trial> = local.into_iter().map(|(n, f)| Trial::test(n, f)).collect();
    for (n, f) in real {
        trials.push(needs(Trial::test(n, f), &alpine));
    }
    let default = Trial::test(
        "fetch::alpine_fixtures::index_default_trust",
        real_indexes_default_trust,
    );
    trials.push(needs(needs(default, &alpine), &bundled_is_the_default()));
    // The default trust writes btfgate's bundled keys into the cache: this binary's own.
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("BTFGATE_CACHE", cache.path());
    let conclusion = libtest_mimic::run(&args, trials);
    drop(cache);
    conclusion.exit();
}
