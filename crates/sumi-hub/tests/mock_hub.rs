//! Hub downloads against the mock Hub of `sumi_testkit::mock_hub` (127.0.0.1, no network): the
//! cache layout, the sha256 check, errors, resume (after a cut or a stall), offline mode,
//! repo-level choices, the token.

use std::path::{Path, PathBuf};

use sumi_hub::{Event, Hub, HubConfig, HubError, HubId};
use sumi_testkit::mock_hub::{bytes, sha256_hex, MockHub, MockRepo};

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
/// A checkpoint larger than one read chunk (1 MiB), so transfers take several reads.
const SIZE: usize = 3 << 20;

fn hub(mock: &MockHub, cache: &Path) -> Hub {
    Hub::new(HubConfig {
        endpoint: mock.url.clone(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        read_timeout: sumi_hub::config::DEFAULT_READ_TIMEOUT,
    })
}

fn ckpt_repo() -> (MockRepo, Vec<u8>) {
    let b = bytes(1, SIZE);
    let repo = MockRepo::new(
        C1,
        &[
            ("model.safetensors", b.clone()),
            ("README.md", b"# hi".to_vec()),
        ],
    );
    (repo, b)
}

/// Fetches `id`, returning the result and the events as text.
fn fetch(hub: &Hub, id: &str) -> (Result<sumi_hub::Fetched, HubError>, Vec<String>) {
    let mut events = Vec::new();
    let r = hub.fetch(&HubId::parse(id).unwrap(), &mut |e| {
        let t = match e {
            Event::Cached { id, .. } => format!("cached {id}"),
            Event::Download { id, from, .. } => format!("download {id} from {from}"),
            Event::Retry { id, done, .. } => format!("retry {id} at {done}"),
            Event::Done { id, .. } => format!("done {id}"),
            _ => return,
        };
        events.push(t);
    });
    (r, events)
}

fn cdn_gets(mock: &MockHub) -> Vec<Option<String>> {
    mock.seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.starts_with("/cdn/"))
        .map(|s| s.header("range").map(str::to_string))
        .collect()
}

fn repo_dir(cache: &Path, id: &str) -> PathBuf {
    cache.join(format!("models--{}", id.replace('/', "--")))
}

#[test]
fn downloads_into_the_hub_cache_layout_once() {
    let mock = MockHub::start();
    let (repo, b) = ckpt_repo();
    mock.add("org/ckpt", repo);
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub(&mock, tmp.path());
    let (r, events) = fetch(&hub, "org/ckpt");
    let got = r.unwrap();
    let root = repo_dir(tmp.path(), "org/ckpt");
    let sha = sha256_hex(&b);
    assert_eq!(
        got.path,
        root.join("snapshots").join(C1).join("model.safetensors")
    );
    assert_eq!(got.commit, C1);
    assert_eq!(got.bytes, SIZE as u64);
    assert_eq!(
        std::fs::read_link(&got.path).unwrap(),
        Path::new("../../blobs").join(&sha)
    );
    assert_eq!(std::fs::read(root.join("blobs").join(&sha)).unwrap(), b);
    assert_eq!(std::fs::read_to_string(root.join("refs/main")).unwrap(), C1);
    let blobs: Vec<_> = std::fs::read_dir(root.join("blobs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(blobs.len(), 1, "no .incomplete left");
    assert_eq!(
        events,
        [
            "download org/ckpt/model.safetensors from 0",
            "done org/ckpt/model.safetensors"
        ]
    );
    // the token-less HEAD saw the LFS headers, not the CDN's
    assert_eq!(cdn_gets(&mock), [None]);
    // asked again: the cache answers, nothing is transferred
    let (r, events) = fetch(&hub, "org/ckpt/model.safetensors");
    assert_eq!(r.unwrap().path, got.path);
    assert_eq!(events, ["cached org/ckpt/model.safetensors"]);
    assert_eq!(cdn_gets(&mock).len(), 1);
}

#[test]
fn a_corrupted_file_is_refused_and_nothing_kept() {
    let mock = MockHub::start();
    let (repo, b) = ckpt_repo();
    mock.add("org/ckpt", repo);
    mock.state().corrupt = true;
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(&hub(&mock, tmp.path()), "org/ckpt").0.unwrap_err();
    let sha = sha256_hex(&b);
    assert!(matches!(e, HubError::Checksum { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("org/ckpt/model.safetensors: the downloaded file's sha256 is ")
            && msg.contains(&format!("the Hub's is {sha}; the file was deleted")),
        "{msg}"
    );
    let root = repo_dir(tmp.path(), "org/ckpt");
    assert!(!root.join("blobs").join(&sha).exists());
    assert!(!root
        .join("blobs")
        .join(format!("{sha}.incomplete"))
        .exists());
    assert!(!root
        .join("snapshots")
        .join(C1)
        .join("model.safetensors")
        .exists());
}

#[test]
fn sizes_that_disagree_are_refused() {
    let mock = MockHub::start();
    let (repo, b) = ckpt_repo();
    mock.add("org/ckpt", repo);
    mock.state().lie_size = true;
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(&hub(&mock, tmp.path()), "org/ckpt")
        .0
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "org/ckpt/model.safetensors: unusable answer from the Hub: Content-Length {SIZE} \
             where {} bytes were due (X-Linked-Size {})",
            SIZE + 1,
            SIZE + 1
        )
    );
    let blobs = repo_dir(tmp.path(), "org/ckpt").join("blobs");
    assert!(!blobs.join(sha256_hex(&b)).exists());
}

#[test]
fn missing_repos_and_files_are_named() {
    let mock = MockHub::start();
    mock.add("org/ckpt", ckpt_repo().0);
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub(&mock, tmp.path());
    let e = fetch(&hub, "org/missing").0.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "org/missing: not found on the Hub at {} (RepoNotFound)",
            mock.url
        )
    );
    let e = fetch(&hub, "org/ckpt/nope.safetensors")
        .0
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "org/ckpt/nope.safetensors: not found on the Hub at {} (EntryNotFound)",
            mock.url
        )
    );
    let e = fetch(&hub, "org/ckpt@nope").0.unwrap_err().to_string();
    assert!(
        e.starts_with("org/ckpt@nope: not found") && e.ends_with("(RevisionNotFound)"),
        "{e}"
    );
}

#[test]
fn an_interrupted_transfer_resumes_with_range() {
    let mock = MockHub::start();
    let (repo, b) = ckpt_repo();
    mock.add("org/ckpt", repo);
    let n = 1_000_000;
    {
        let mut st = mock.state();
        st.cuts = 3; // every try of the first call stops
        st.cut_after = n;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub(&mock, tmp.path());
    let (r, events) = fetch(&hub, "org/ckpt/model.safetensors");
    let e = r.unwrap_err();
    assert!(
        matches!(e, HubError::Interrupted { got, size, .. } if got == 3 * n as u64 && size == SIZE as u64),
        "{e}"
    );
    assert!(e.to_string().contains("run again to resume it"), "{e}");
    let part = repo_dir(tmp.path(), "org/ckpt")
        .join("blobs")
        .join(format!("{}.incomplete", sha256_hex(&b)));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 3 * n as u64);
    let id = "org/ckpt/model.safetensors";
    assert_eq!(
        events,
        [
            format!("download {id} from 0"),
            format!("retry {id} at {n}"),
            format!("download {id} from {n}"),
            format!("retry {id} at {}", 2 * n),
            format!("download {id} from {}", 2 * n),
        ]
    );
    // the next call goes on from the part on disk
    let got = fetch(&hub, id).0.unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b);
    assert!(!part.exists());
    let ranges = cdn_gets(&mock);
    let want: Vec<Option<String>> = [None, Some(n), Some(2 * n), Some(3 * n)]
        .iter()
        .map(|r| r.map(|r| format!("bytes={r}-")))
        .collect();
    assert_eq!(ranges, want);
}

/// A server that stops sending mid-body (the connection left open): each try gives up after the
/// read timeout and resumes; the last ends in an error naming the file and the wait, and a
/// later call finishes the file.
#[test]
fn a_stalled_transfer_times_out_and_resumes() {
    let mock = MockHub::start();
    let (repo, b) = ckpt_repo();
    mock.add("org/ckpt", repo);
    let n = 1_000_000;
    {
        let mut st = mock.state();
        st.cuts = 3;
        st.cut_after = n;
        st.stall = true;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig {
        read_timeout: std::time::Duration::from_millis(300),
        ..hub(&mock, tmp.path()).config().clone()
    });
    let t0 = std::time::Instant::now();
    let (r, events) = fetch(&hub, "org/ckpt/model.safetensors");
    let took = t0.elapsed();
    let e = r.unwrap_err();
    assert!(
        matches!(e, HubError::Interrupted { got, .. } if got == 3 * n as u64),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "org/ckpt/model.safetensors: the download stopped after {} of {SIZE} bytes (nothing \
             arrived for 0.3 s; HF_HUB_DOWNLOAD_TIMEOUT sets how long to wait); run again to \
             resume it",
            3 * n
        )
    );
    let id = "org/ckpt/model.safetensors";
    assert_eq!(events[1], format!("retry {id} at {n}"));
    // three waits of 0.3 s, not the stalled server's 30 s
    println!("three stalled tries took {took:?}");
    assert!(
        took >= std::time::Duration::from_millis(900) && took.as_secs() < 5,
        "{took:?}"
    );
    let got = fetch(&hub, id).0.unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b);
}

#[test]
fn a_whole_file_answer_to_a_range_request_restarts() {
    let mock = MockHub::start();
    let (repo, b) = ckpt_repo();
    mock.add("org/ckpt", repo);
    mock.state().ignore_range = true;
    let tmp = tempfile::tempdir().unwrap();
    // a stale part of other bytes: appending the whole file to it would fail the sha256
    let blobs = repo_dir(tmp.path(), "org/ckpt").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        blobs.join(format!("{}.incomplete", sha256_hex(&b))),
        [7u8; 1000],
    )
    .unwrap();
    let got = fetch(&hub(&mock, tmp.path()), "org/ckpt").0.unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b);
    assert_eq!(cdn_gets(&mock), [Some("bytes=1000-".to_string())]);
}

#[test]
fn offline_mode_answers_from_the_cache_only() {
    let mock = MockHub::start();
    mock.add("org/ckpt", ckpt_repo().0);
    let tmp = tempfile::tempdir().unwrap();
    let online = fetch(&hub(&mock, tmp.path()), "org/ckpt").0.unwrap();
    let asked = mock.seen().len();
    let offline = Hub::new(HubConfig {
        offline: true,
        ..hub(&mock, tmp.path()).config().clone()
    });
    for id in [
        "org/ckpt",
        "org/ckpt/model.safetensors",
        &format!("org/ckpt@{C1}"),
    ] {
        let (r, events) = fetch(&offline, id);
        assert_eq!(r.unwrap().path, online.path, "{id}");
        let rev = id
            .split_once('@')
            .map_or(String::new(), |(_, r)| format!("@{r}"));
        assert_eq!(events, [format!("cached org/ckpt/model.safetensors{rev}")]);
    }
    assert_eq!(mock.seen().len(), asked, "offline asked the Hub");
    let e = fetch(&offline, "org/other").0.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "org/other: not in the Hub cache {} and HF_HUB_OFFLINE is set",
            tmp.path().display()
        )),
        "{e}"
    );
    let e = fetch(&offline, "org/ckpt/README.md")
        .0
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("org/ckpt/README.md: not in the Hub cache"),
        "{e}"
    );
}

#[test]
fn several_checkpoints_are_an_error_listing_them() {
    let mock = MockHub::start();
    let files = [
        ("v1-5-pruned.safetensors", bytes(2, 10)),
        ("v1-5-pruned-emaonly.safetensors", bytes(3, 10)),
        ("v1-5-pruned.ckpt", bytes(4, 10)),
    ];
    mock.add("org/many", MockRepo::new(C1, &files));
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(&hub(&mock, tmp.path()), "org/many")
        .0
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "org/many holds several checkpoint files; name one, e.g. \
         org/many/v1-5-pruned-emaonly.safetensors: v1-5-pruned-emaonly.safetensors, \
         v1-5-pruned.safetensors"
    );
    assert!(cdn_gets(&mock).is_empty());
}

#[test]
fn a_diffusers_repo_fetches_only_the_needed_files() {
    let mock = MockHub::start();
    let f = |s| bytes(s, 100);
    let files = [
        ("model_index.json", b"{}".to_vec()),
        ("v1-5-pruned.safetensors", f(1)),
        ("unet/config.json", b"{}".to_vec()),
        ("unet/diffusion_pytorch_model.safetensors", f(2)),
        ("unet/diffusion_pytorch_model.fp16.safetensors", f(3)),
        ("vae/config.json", b"{}".to_vec()),
        ("vae/diffusion_pytorch_model.safetensors", f(4)),
        ("vae/diffusion_pytorch_model.bin", f(5)),
        ("text_encoder/config.json", b"{}".to_vec()),
        ("text_encoder/model.safetensors", f(6)),
        ("tokenizer/vocab.json", b"{}".to_vec()),
        ("scheduler/scheduler_config.json", b"{}".to_vec()),
        ("safety_checker/model.safetensors", f(7)),
    ];
    mock.add("org/diff", MockRepo::new(C1, &files));
    let tmp = tempfile::tempdir().unwrap();
    let got = fetch(&hub(&mock, tmp.path()), "org/diff").0.unwrap();
    let snap = repo_dir(tmp.path(), "org/diff").join("snapshots").join(C1);
    assert_eq!(got.path, snap);
    let mut resolved: Vec<String> = mock
        .seen()
        .iter()
        .filter(|s| s.method == "HEAD")
        .map(|s| s.path.split_once(C1).unwrap().1.to_string())
        .collect();
    resolved.sort();
    assert_eq!(
        resolved,
        [
            "/model_index.json",
            "/scheduler/scheduler_config.json",
            "/text_encoder/config.json",
            "/text_encoder/model.safetensors",
            "/tokenizer/vocab.json",
            "/unet/config.json",
            "/unet/diffusion_pytorch_model.safetensors",
            "/vae/config.json",
            "/vae/diffusion_pytorch_model.safetensors",
        ]
    );
    assert_eq!(
        std::fs::read(snap.join("unet/diffusion_pytorch_model.safetensors")).unwrap(),
        f(2)
    );
    // a deeper file links three levels up
    assert_eq!(
        std::fs::read_link(snap.join("unet/diffusion_pytorch_model.safetensors")).unwrap(),
        Path::new("../../../blobs").join(sha256_hex(&f(2)))
    );
    assert!(!snap.join("safety_checker").exists());
}

#[test]
fn the_token_goes_to_the_hub_as_bearer_and_not_along_redirects() {
    let mock = MockHub::start();
    let (mut repo, b) = ckpt_repo();
    repo.token = Some("hf_secret".into());
    mock.add("org/gated", repo);
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(&hub(&mock, tmp.path()), "org/gated")
        .0
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("org/gated: the Hub refused access (HTTP 401: GatedRepo: Access to this repo is restricted.); a gated or private repo needs HF_TOKEN"),
        "{e}"
    );
    let with_token = Hub::new(HubConfig {
        token: Some("hf_secret".into()),
        ..hub(&mock, tmp.path()).config().clone()
    });
    let got = fetch(&with_token, "org/gated").0.unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b);
    let seen = mock.seen();
    let auth = |pred: &dyn Fn(&str) -> bool| -> Vec<Option<String>> {
        seen.iter()
            .skip(1)
            .filter(|s| pred(&s.path))
            .map(|s| s.header("authorization").map(str::to_string))
            .collect()
    };
    let bearer = Some("Bearer hf_secret".to_string());
    assert_eq!(
        auth(&|p| p.starts_with("/api/")),
        std::slice::from_ref(&bearer)
    );
    assert_eq!(auth(&|p| p.contains("/resolve/")), [bearer.clone(), bearer]);
    assert_eq!(auth(&|p| p.starts_with("/cdn/")), [None]);
}

#[test]
fn a_revision_names_its_commit_and_gets_its_ref() {
    let mock = MockHub::start();
    let (mut repo, main) = ckpt_repo();
    let old = bytes(9, 5000);
    repo.add_commit("v1.0", C2, &[("model.safetensors", old.clone())]);
    mock.add("org/ckpt", repo);
    let tmp = tempfile::tempdir().unwrap();
    let hub = hub(&mock, tmp.path());
    let got = fetch(&hub, "org/ckpt/model.safetensors@v1.0").0.unwrap();
    let root = repo_dir(tmp.path(), "org/ckpt");
    assert_eq!(
        got.path,
        root.join("snapshots").join(C2).join("model.safetensors")
    );
    assert_eq!(std::fs::read(&got.path).unwrap(), old);
    assert_eq!(std::fs::read_to_string(root.join("refs/v1.0")).unwrap(), C2);
    assert!(!root.join("refs/main").exists());
    // a commit hash needs no ref
    let got = fetch(&hub, &format!("org/ckpt@{C1}")).0.unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), main);
    assert!(!root.join("refs/main").exists());
    assert!(!root.join(format!("refs/{C1}")).exists());
    let heads: Vec<String> = mock
        .seen()
        .iter()
        .filter(|s| s.method == "HEAD")
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        heads,
        [
            "/org/ckpt/resolve/v1.0/model.safetensors".to_string(),
            format!("/org/ckpt/resolve/{C1}/model.safetensors"),
        ]
    );
}
