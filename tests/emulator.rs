//! The emulator, driven over real HTTP on 127.0.0.1 by the project's own
//! client in every dialect and signature: every operation the filesystem
//! needs, the errors it relies on, signature checks and the counters.

use bucketfs::emulator::handler::BucketSpec;
use bucketfs::emulator::{self, EmulatorConfig, RunningEmulator};
use bucketfs::store::credentials::Credentials;
use bucketfs::store::http::{HttpStore, HttpStoreConfig};
use bucketfs::store::retry::RetryPolicy;
use bucketfs::store::sign::SignatureVersion;
use bucketfs::store::*;
use bytes::Bytes;
use std::collections::BTreeSet;

const AK: &str = "emulator-test-ak";
const SK: &str = "emulator-test-secret";

async fn start(provider: Provider, buckets: &[&str]) -> RunningEmulator {
    emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        provider,
        buckets: buckets
            .iter()
            .map(|b| BucketSpec::parse(b).unwrap())
            .collect(),
        credentials: Credentials::new(AK, SK),
        faults: Vec::new(),
        seed: 1,
        data_dir: None,
    })
    .await
    .expect("emulator starts on a free port")
}

fn client(emu: &RunningEmulator, dialect: Dialect, bucket: &str, creds: Credentials) -> HttpStore {
    let mut config = HttpStoreConfig::new(&emu.url, bucket, dialect, creds);
    config.region = "local".into();
    config.path_style = true;
    config.retry = RetryPolicy::none();
    HttpStore::new(config).expect("valid client config")
}

/// The emulator's counters, from `GET /-/stats`.
async fn fetch_stats(emu: &RunningEmulator) -> serde_json::Value {
    reqwest::get(format!("{}/-/stats", emu.url))
        .await
        .expect("stats endpoint answers")
        .json()
        .await
        .expect("stats are JSON")
}

/// A client signing with the emulator's credentials.
fn signed(emu: &RunningEmulator, dialect: Dialect, bucket: &str) -> HttpStore {
    client(emu, dialect, bucket, Credentials::new(AK, SK))
}

fn provider_of(v: SignatureVersion) -> Provider {
    match v {
        SignatureVersion::S3V4 | SignatureVersion::S3V2 => Provider::S3,
        SignatureVersion::OssV1 | SignatureVersion::OssV4 => Provider::Oss,
        SignatureVersion::Obs | SignatureVersion::ObsV2 => Provider::Obs,
        SignatureVersion::Cos => Provider::Cos,
    }
}

fn attrs(mode: &str) -> ObjectAttributes {
    let mut a = ObjectAttributes {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    a.metadata.insert("mode".into(), mode.into());
    a
}

async fn put(store: &HttpStore, key: &str, body: &'static [u8]) {
    store
        .put_object(&PutRequest {
            key: key.into(),
            body: Bytes::from_static(body),
            attributes: attrs("100644"),
        })
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

async fn read_all(store: &HttpStore, key: &str) -> Bytes {
    store
        .get_object(&GetRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .body
}

/// Every key and prefix under `prefix`, paging `page` at a time.
async fn list_all(store: &HttpStore, prefix: &str, page: u32) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    let mut prefixes = Vec::new();
    let mut req = ListRequest {
        prefix: prefix.into(),
        delimiter: Some("/".into()),
        max_keys: Some(page),
        ..Default::default()
    };
    loop {
        let p = store.list_objects(&req).await.expect("list");
        keys.extend(p.objects.into_iter().map(|o| o.key));
        prefixes.extend(p.common_prefixes);
        match p.next {
            Some(next) => req.continuation = Some(next),
            None => return (keys, prefixes),
        }
    }
}

#[tokio::test]
async fn every_dialect_serves_the_filesystem_operations() {
    for version in SignatureVersion::ALL {
        let provider = provider_of(version);
        let emu = start(provider, &["bkt"]).await;
        let dialect = Dialect::new(provider).with_signature(version);
        let store = signed(&emu, dialect.clone(), "bkt");
        let ctx = format!("{version:?}");

        store
            .head_bucket()
            .await
            .unwrap_or_else(|e| panic!("{ctx}: head bucket: {e}"));

        // Put, head (metadata), ranged get, 416.
        put(&store, "dir/a b+c.txt", b"hello world").await;
        let meta = store.head_object("dir/a b+c.txt").await.unwrap();
        assert_eq!(meta.size, 11, "{ctx}");
        assert_eq!(
            meta.metadata.get("mode").map(String::as_str),
            Some("100644"),
            "{ctx}"
        );
        assert_eq!(meta.content_type.as_deref(), Some("text/plain"), "{ctx}");
        let got = store
            .get_object(&GetRequest {
                key: "dir/a b+c.txt".into(),
                range: Some(6..11),
                if_match: Some(meta.etag.clone()),
            })
            .await
            .unwrap();
        assert_eq!(&got.body[..], b"world", "{ctx}");
        assert_eq!(got.total_size, 11);
        let past_end = store
            .get_object(&GetRequest {
                key: "dir/a b+c.txt".into(),
                range: Some(11..20),
                if_match: None,
            })
            .await;
        assert!(
            matches!(past_end, Err(StoreError::InvalidRange(_))),
            "{ctx}: {past_end:?}"
        );
        let stale = store
            .get_object(&GetRequest {
                key: "dir/a b+c.txt".into(),
                range: None,
                if_match: Some("0000".into()),
            })
            .await;
        assert!(
            matches!(stale, Err(StoreError::PreconditionFailed(_))),
            "{ctx}: {stale:?}"
        );
        assert!(matches!(
            store.head_object("dir/missing").await,
            Err(StoreError::NoSuchKey { .. })
        ));

        // Listing with delimiter and pagination, odd keys included.
        for key in [
            "dir/日本/ファイル ü.txt",
            "dir/sub/x",
            "dir/z%20y",
            "dir/p+q",
        ] {
            put(&store, key, b"x").await;
        }
        let (keys, prefixes) = list_all(&store, "dir/", 2).await;
        assert_eq!(
            keys.iter().collect::<BTreeSet<_>>(),
            ["dir/a b+c.txt", "dir/p+q", "dir/z%20y"]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .iter()
                .collect(),
            "{ctx}: keys {keys:?}"
        );
        assert_eq!(
            prefixes,
            vec!["dir/sub/".to_string(), "dir/日本/".to_string()],
            "{ctx}"
        );

        // Copy with REPLACE onto itself changes the metadata.
        store
            .copy_object(&CopyRequest {
                source_key: "dir/a b+c.txt".into(),
                dest_key: "dir/a b+c.txt".into(),
                directive: MetadataDirective::Replace(attrs("100600")),
                source_if_match: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{ctx}: copy: {e}"));
        let meta = store.head_object("dir/a b+c.txt").await.unwrap();
        assert_eq!(
            meta.metadata.get("mode").map(String::as_str),
            Some("100600"),
            "{ctx}"
        );

        // Multipart with a copied range.
        let upload = store
            .create_multipart_upload("big", &attrs("100644"))
            .await
            .unwrap();
        let p1 = store
            .upload_part(&UploadPartRequest {
                key: "big".into(),
                upload_id: upload.clone(),
                part_number: 1,
                body: Bytes::from_static(b"part-one;"),
            })
            .await
            .unwrap();
        let p2 = store
            .upload_part_copy(&UploadPartCopyRequest {
                key: "big".into(),
                upload_id: upload.clone(),
                part_number: 2,
                source_key: "dir/a b+c.txt".into(),
                source_range: Some(0..5),
                source_if_match: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{ctx}: part copy: {e}"));
        let listed = store.list_parts("big", &upload).await.unwrap();
        assert_eq!(listed.len(), 2, "{ctx}");
        store
            .complete_multipart_upload(&CompleteMultipartRequest {
                key: "big".into(),
                upload_id: upload.clone(),
                parts: vec![p1, p2],
            })
            .await
            .unwrap_or_else(|e| panic!("{ctx}: complete: {e}"));
        assert_eq!(
            &read_all(&store, "big").await[..],
            b"part-one;hello",
            "{ctx}"
        );
        let aborted = store
            .create_multipart_upload("gone", &attrs("100644"))
            .await
            .unwrap();
        let open = store
            .list_multipart_uploads("gone", None)
            .await
            .unwrap_or_else(|e| panic!("{ctx}: list uploads: {e}"));
        let ids: Vec<_> = open
            .uploads
            .iter()
            .map(|u| (&u.key[..], &u.upload_id[..]))
            .collect();
        assert_eq!(ids, [("gone", &aborted[..])], "{ctx}");
        assert!(open.uploads[0].initiated.is_some(), "{ctx}");
        store
            .abort_multipart_upload("gone", &aborted)
            .await
            .unwrap();
        assert!(
            store
                .list_multipart_uploads("", None)
                .await
                .unwrap()
                .uploads
                .is_empty(),
            "{ctx}"
        );
        assert!(matches!(
            store.list_parts("gone", &aborted).await,
            Err(StoreError::NoSuchUpload { .. })
        ));

        // Append where the dialect has it.
        if dialect.capabilities.append {
            let first = store
                .append_object(&AppendRequest {
                    key: "log".into(),
                    position: 0,
                    body: Bytes::from_static(b"abc"),
                    attributes: attrs("100644"),
                })
                .await
                .unwrap_or_else(|e| panic!("{ctx}: append: {e}"));
            assert_eq!(first.next_position, 3);
            let second = store
                .append_object(&AppendRequest {
                    key: "log".into(),
                    position: 3,
                    body: Bytes::from_static(b"def"),
                    attributes: ObjectAttributes::default(),
                })
                .await
                .unwrap();
            assert_eq!(second.next_position, 6);
            let wrong = store
                .append_object(&AppendRequest {
                    key: "log".into(),
                    position: 2,
                    body: Bytes::from_static(b"x"),
                    attributes: ObjectAttributes::default(),
                })
                .await;
            assert_eq!(
                wrong,
                Err(StoreError::PositionNotEqualToLength {
                    position: 2,
                    next_position: Some(6)
                }),
                "{ctx}"
            );
            let not_appendable = store
                .append_object(&AppendRequest {
                    key: "big".into(),
                    position: 14,
                    body: Bytes::from_static(b"x"),
                    attributes: ObjectAttributes::default(),
                })
                .await;
            assert!(
                matches!(not_appendable, Err(StoreError::ObjectNotAppendable { .. })),
                "{ctx}: {not_appendable:?}"
            );
            assert_eq!(&read_all(&store, "log").await[..], b"abcdef");
            let meta = store.head_object("log").await.unwrap();
            assert_eq!(meta.object_type, ObjectType::Appendable, "{ctx}");
            assert_eq!(meta.next_append_position, Some(6), "{ctx}");
        }

        // Symlinks where the dialect has them.
        if dialect.capabilities.symlink {
            store
                .put_symlink("link", "dir/a b+c.txt", &attrs("120777"))
                .await
                .unwrap_or_else(|e| panic!("{ctx}: symlink: {e}"));
            assert_eq!(store.get_symlink("link").await.unwrap(), "dir/a b+c.txt");
        }

        // Deletes: batch and single; deleting a missing key succeeds.
        let all: Vec<String> = ["dir/p+q", "dir/z%20y", "dir/sub/x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let deleted = store.delete_objects(&all).await.unwrap();
        assert_eq!(deleted.deleted.len(), 3, "{ctx}");
        store.delete_object("dir/a b+c.txt").await.unwrap();
        store.delete_object("dir/never-existed").await.unwrap();
        let (keys, prefixes) = list_all(&store, "dir/", 1000).await;
        assert!(keys.is_empty(), "{ctx}: {keys:?}");
        assert_eq!(prefixes, vec!["dir/日本/".to_string()]);

        // Missing bucket.
        let other = signed(&emu, dialect.clone(), "nobucket");
        assert!(
            matches!(
                other.head_bucket().await,
                Err(StoreError::NoSuchBucket { .. })
            ),
            "{ctx}"
        );
    }
}

#[tokio::test]
async fn wrong_secrets_and_unknown_keys_are_refused_in_every_dialect() {
    for version in SignatureVersion::ALL {
        let provider = provider_of(version);
        let emu = start(provider, &["bkt"]).await;
        let dialect = Dialect::new(provider).with_signature(version);
        let wrong_secret = client(
            &emu,
            dialect.clone(),
            "bkt",
            Credentials::new(AK, "not-the-secret"),
        );
        // HEAD has no body to carry the code: a plain 403.
        match wrong_secret.head_object("k").await {
            Err(StoreError::AccessDenied(d)) => assert_eq!(d.status, 403, "{version:?}"),
            other => panic!("{version:?}: wrong secret gave {other:?}"),
        }
        match wrong_secret.list_objects(&ListRequest::default()).await {
            Err(StoreError::BadCredentials(d)) => assert_eq!(d.code, "SignatureDoesNotMatch"),
            other => panic!("{version:?}: wrong secret gave {other:?}"),
        }
        let unknown = client(&emu, dialect, "bkt", Credentials::new("who-is-this", SK));
        match unknown.list_objects(&ListRequest::default()).await {
            Err(StoreError::BadCredentials(d)) => assert_eq!(d.code, "InvalidAccessKeyId"),
            other => panic!("{version:?}: unknown key gave {other:?}"),
        }
    }
}

#[tokio::test]
async fn native_operations_exist_only_on_buckets_of_that_type() {
    // OBS parallel file system: modify, truncate, rename.
    let emu = start(Provider::Obs, &["plain", "fs:pfs"]).await;
    let pfs_info = signed(&emu, Dialect::new(Provider::Obs), "fs")
        .head_bucket()
        .await
        .unwrap();
    assert!(pfs_info.obs_pfs);
    let pfs = signed(
        &emu,
        Dialect::new(Provider::Obs).with_bucket_info(&pfs_info),
        "fs",
    );
    put(&pfs, "d/f", b"0123456789").await;
    pfs.modify_object("d/f", 2, Bytes::from_static(b"ab"))
        .await
        .unwrap();
    pfs.truncate_object("d/f", 6).await.unwrap();
    pfs.rename_object("d/f", "d/g").await.unwrap();
    assert_eq!(&read_all(&pfs, "d/g").await[..], b"01ab45");
    assert!(matches!(
        pfs.head_object("d/f").await,
        Err(StoreError::NoSuchKey { .. })
    ));
    let plain_info = signed(&emu, Dialect::new(Provider::Obs), "plain")
        .head_bucket()
        .await
        .unwrap();
    assert!(!plain_info.obs_pfs);

    // OSS hierarchical namespace: directory rename through bucketInfo probe.
    let emu = start(Provider::Oss, &["hns:hns"]).await;
    let probe = signed(&emu, Dialect::new(Provider::Oss), "hns");
    let info = probe.head_bucket().await.unwrap();
    assert!(info.oss_hierarchical_namespace);
    let hns = signed(
        &emu,
        Dialect::new(Provider::Oss).with_bucket_info(&info),
        "hns",
    );
    put(&hns, "src/a", b"1").await;
    put(&hns, "src/b/c", b"2").await;
    hns.rename_object("src/", "dst/").await.unwrap();
    let (keys, prefixes) = list_all(&hns, "dst/", 1000).await;
    assert_eq!(keys, vec!["dst/a".to_string()]);
    assert_eq!(prefixes, vec!["dst/b/".to_string()]);
    let (old, _) = list_all(&hns, "src/", 1000).await;
    assert!(old.is_empty());
}

#[tokio::test]
async fn stats_count_requests_and_bytes_per_operation() {
    let emu = start(Provider::S3, &["bkt"]).await;
    let store = signed(&emu, Dialect::new(Provider::S3), "bkt");
    for i in 0..2500 {
        store
            .put_object(&PutRequest {
                key: format!("many/f{i:05}"),
                body: Bytes::from_static(b"1234"),
                attributes: ObjectAttributes::default(),
            })
            .await
            .unwrap();
    }
    let http = reqwest::Client::new();
    http.post(format!("{}/-/stats/reset", emu.url))
        .send()
        .await
        .unwrap();
    let (keys, _) = list_all(&store, "many/", 1000).await;
    assert_eq!(keys.len(), 2500);
    read_all(&store, "many/f00007").await;
    let stats = fetch_stats(&emu).await;
    assert_eq!(stats["ListObjectsV2"]["requests"], 3, "{stats}");
    assert_eq!(stats["GetObject"]["requests"], 1, "{stats}");
    assert_eq!(stats["GetObject"]["bytes_out"], 4, "{stats}");
    assert!(
        stats.get("HeadObject").is_none(),
        "a listing costs no HEAD: {stats}"
    );
    assert!(
        stats.get("PutObject").is_none(),
        "reset zeroed the puts: {stats}"
    );
}

#[tokio::test]
async fn injected_faults_are_ridden_out_by_the_client_retries() {
    let emu = start(Provider::Oss, &["bkt"]).await;
    let mut config = HttpStoreConfig::new(
        &emu.url,
        "bkt",
        Dialect::new(Provider::Oss),
        Credentials::new(AK, SK),
    );
    config.region = "local".into();
    config.path_style = true;
    config.retry = RetryPolicy {
        max_attempts: 6,
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(10),
    };
    let store = HttpStore::new(config).unwrap();
    put(&store, "f", b"0123456789abcdef").await;

    let http = reqwest::Client::new();
    let rules = "GetObject:503:next=2\nGetObject:truncate:next=1\nHeadObject:reset:next=1\nPutObject:500:next=1\n";
    let answer = http
        .post(format!("{}/-/faults", emu.url))
        .body(rules)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), rules, "rules echo back");
    http.post(format!("{}/-/stats/reset", emu.url))
        .send()
        .await
        .unwrap();

    assert_eq!(&read_all(&store, "f").await[..], b"0123456789abcdef");
    assert_eq!(store.head_object("f").await.unwrap().size, 16);
    put(&store, "g", b"x").await;

    let stats = fetch_stats(&emu).await;
    assert_eq!(
        stats["GetObject"]["requests"], 4,
        "two 503s, one cut short, one good: {stats}"
    );
    assert_eq!(stats["HeadObject"]["requests"], 2, "{stats}");
    assert_eq!(stats["PutObject"]["requests"], 2, "{stats}");
    let left = http
        .get(format!("{}/-/faults", emu.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(left, "", "every next=N rule is spent");

    // A CreateMultipartUpload whose answer is lost after the server made
    // the upload: the retry makes another, and the lost one is aborted.
    http.post(format!("{}/-/faults", emu.url))
        .body("CreateMultipartUpload:truncate:next=1\n")
        .send()
        .await
        .unwrap();
    let kept = store
        .create_multipart_upload("m", &ObjectAttributes::default())
        .await
        .unwrap();
    let open = store.list_multipart_uploads("", None).await.unwrap();
    let ids: Vec<_> = open.uploads.iter().map(|u| &u.upload_id[..]).collect();
    assert_eq!(
        ids,
        [&kept[..]],
        "only the upload whose answer arrived is open"
    );
    let stats = fetch_stats(&emu).await;
    assert_eq!(stats["CreateMultipartUpload"]["requests"], 2, "{stats}");
    assert_eq!(stats["AbortMultipartUpload"]["requests"], 1, "{stats}");
    store.abort_multipart_upload("m", &kept).await.unwrap();

    // A bad rule is refused with the reason.
    let bad = http
        .post(format!("{}/-/faults", emu.url))
        .body("GetObject:404")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("unknown kind"));
}

#[tokio::test]
async fn a_data_directory_keeps_objects_across_restarts() {
    let dir = std::env::temp_dir().join(format!("bucketfs-emu-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = |dir: &std::path::Path| EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        provider: Provider::Cos,
        buckets: vec![BucketSpec::parse("demo-1250000000").unwrap()],
        credentials: Credentials::new(AK, SK),
        faults: Vec::new(),
        seed: 1,
        data_dir: Some(dir.to_path_buf()),
    };
    {
        let emu = emulator::start(config(&dir)).await.unwrap();
        let store = signed(&emu, Dialect::new(Provider::Cos), "demo-1250000000");
        put(&store, "kept/one", b"first").await;
        put(&store, "removed", b"x").await;
        store
            .append_object(&AppendRequest {
                key: "kept/log".into(),
                position: 0,
                body: Bytes::from_static(b"line 1\n"),
                attributes: attrs("100644"),
            })
            .await
            .unwrap();
        store.delete_object("removed").await.unwrap();
    }
    let emu = emulator::start(config(&dir)).await.unwrap();
    let store = signed(&emu, Dialect::new(Provider::Cos), "demo-1250000000");
    assert_eq!(&read_all(&store, "kept/one").await[..], b"first");
    let meta = store.head_object("kept/log").await.unwrap();
    assert_eq!(
        meta.object_type,
        ObjectType::Appendable,
        "appends go on after a restart"
    );
    assert_eq!(
        meta.metadata.get("mode").map(String::as_str),
        Some("100644")
    );
    let next = store
        .append_object(&AppendRequest {
            key: "kept/log".into(),
            position: 7,
            body: Bytes::from_static(b"line 2\n"),
            attributes: ObjectAttributes::default(),
        })
        .await
        .unwrap();
    assert_eq!(next.next_position, 14);
    assert!(matches!(
        store.head_object("removed").await,
        Err(StoreError::NoSuchKey { .. })
    ));
    drop(emu);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A part source over memory whose bytes can change between reads.
#[derive(Debug)]
struct ChangingSource {
    data: parking_lot::Mutex<Vec<u8>>,
    /// After this many reads of the last chunk, the data changes once.
    change_after: parking_lot::Mutex<Option<usize>>,
}

impl PartSource for ChangingSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let data = self.data.lock();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = data.get(offset as usize + i).copied().unwrap_or(0);
        }
        drop(data);
        let mut change = self.change_after.lock();
        if let Some(n) = change.as_mut() {
            if *n == 0 {
                // The last byte: a chunk still to be read holds it.
                let mut data = self.data.lock();
                let last = data.len() - 1;
                data[last] ^= 0xff;
                *change = None;
            } else {
                *n -= 1;
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn streamed_parts_upload_from_a_source_in_every_signature() {
    // 2.5 chunks, so the body is sent in three frames; the source reads
    // zeros past its end.
    let len = STREAM_CHUNK * 5 / 2;
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    for version in SignatureVersion::ALL {
        let provider = provider_of(version);
        let emu = start(provider, &["bkt"]).await;
        let store = signed(&emu, Dialect::new(provider).with_signature(version), "bkt");
        let ctx = format!("{version:?}");
        let id = store
            .create_multipart_upload("big", &ObjectAttributes::default())
            .await
            .unwrap();
        let source = std::sync::Arc::new(ChangingSource {
            data: parking_lot::Mutex::new(data.clone()),
            change_after: parking_lot::Mutex::new(None),
        });
        let part = store
            .upload_part_streamed(&StreamedPartRequest {
                key: "big".into(),
                upload_id: id.clone(),
                part_number: 1,
                source: source.clone(),
                range: 0..len as u64 + 100,
            })
            .await
            .unwrap_or_else(|e| panic!("{ctx}: streamed part: {e}"));
        store
            .complete_multipart_upload(&CompleteMultipartRequest {
                key: "big".into(),
                upload_id: id,
                parts: vec![part],
            })
            .await
            .unwrap_or_else(|e| panic!("{ctx}: complete: {e}"));
        let mut want = data.clone();
        want.extend(std::iter::repeat_n(0u8, 100));
        assert!(
            read_all(&store, "big").await[..] == want[..],
            "{ctx}: bytes differ"
        );
    }
}

#[tokio::test]
async fn a_streamed_part_whose_source_changes_is_digested_and_sent_again() {
    let emu = start(Provider::S3, &["bkt"]).await;
    let mut config = HttpStoreConfig::new(
        &emu.url,
        "bkt",
        Dialect::new(Provider::S3),
        Credentials::new(AK, SK),
    );
    config.region = "local".into();
    config.path_style = true;
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    };
    let store = HttpStore::new(config).unwrap();
    let len = STREAM_CHUNK * 2;
    let source = std::sync::Arc::new(ChangingSource {
        data: parking_lot::Mutex::new(vec![7u8; len]),
        // The digest pass reads 2 chunks, the send pass's first read
        // changes the second chunk, which it reads next.
        change_after: parking_lot::Mutex::new(Some(2)),
    });
    let id = store
        .create_multipart_upload("k", &ObjectAttributes::default())
        .await
        .unwrap();
    let part = store
        .upload_part_streamed(&StreamedPartRequest {
            key: "k".into(),
            upload_id: id.clone(),
            part_number: 1,
            source: source.clone(),
            range: 0..len as u64,
        })
        .await
        .expect("the second attempt sends the new bytes");
    store
        .complete_multipart_upload(&CompleteMultipartRequest {
            key: "k".into(),
            upload_id: id,
            parts: vec![part],
        })
        .await
        .unwrap();
    let got = read_all(&store, "k").await;
    assert_eq!(got[len - 1], 7 ^ 0xff, "the bytes as they are now");
    assert!(got[..len - 1].iter().all(|&b| b == 7));
    // The emulator never saw the first attempt whole; the client counts it.
    let counts = store.request_counts();
    let parts = &counts["UploadPart"];
    assert_eq!((parts.requests, parts.errors), (2, 1), "{parts:?}");
    assert!(
        parts
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("changed"),
        "{parts:?}"
    );
}
