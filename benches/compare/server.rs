//! The object store every filesystem of one comparison run mounts: the
//! built-in emulator (in this process, with request counters) or a Garage
//! started by `tests/garage/run.sh` (no counters).
//!
//! The bench seeds objects and checks that work has reached the server
//! through a *back door* that is not counted: the emulator's bucket
//! itself, or for Garage a client of its own. The direct-client baseline
//! goes through [`Server::client`], over HTTP like any filesystem.

use bucketfs::emulator::{self, EmulatorConfig, RunningEmulator, handler::BucketSpec};
use bucketfs::store::credentials::Credentials;
use bucketfs::store::http::{HttpStore, HttpStoreConfig};
use bucketfs::store::memory::ObjectRecord;
use bucketfs::store::retry::RetryPolicy;
use bucketfs::store::*;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::runtime::Handle;

const EMULATOR_KEY_ID: &str = "bench-ak";
const EMULATOR_SECRET: &str = "bench-sk";
/// Objects seeded at once through the back door of a remote server.
const SEED_PARALLEL: usize = 16;
/// Part size of the seeding and of the direct client's multipart uploads.
pub const PART: u64 = 8 << 20;
/// Requests in flight of a multipart upload here, and of the direct
/// client's download: 64 MiB, bucketfs's default `readahead_max`.
pub const PARALLEL: usize = 8;

/// Requests and bytes of one operation, as the emulator counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCount {
    pub requests: u64,
    /// Request bodies (what a client uploads).
    pub bytes_in: u64,
    /// Response bodies (what a client downloads).
    pub bytes_out: u64,
}

pub type Counters = BTreeMap<String, OpCount>;

enum Backend {
    Emulator(RunningEmulator),
    Remote(Arc<HttpStore>),
}

pub struct Server {
    /// `emulator`, `emulator-oss` or `garage`: the section of the report.
    pub name: String,
    pub provider: Provider,
    pub url: String,
    pub bucket: String,
    pub region: String,
    pub key_id: String,
    pub secret: String,
    backend: Backend,
    /// The direct client (the baseline), counted like any filesystem.
    pub client: Arc<HttpStore>,
    pub runtime: Handle,
}

impl Server {
    /// An emulator speaking `provider`'s dialect on a free port of
    /// 127.0.0.1, served by `runtime`.
    pub fn emulator(runtime: &Handle, provider: Provider) -> Server {
        let bucket = match provider {
            Provider::Cos => "bench-1250000000",
            _ => "bench",
        };
        let emu = runtime
            .block_on(emulator::start(EmulatorConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                provider,
                buckets: vec![BucketSpec::parse(bucket).unwrap()],
                credentials: Credentials::new(EMULATOR_KEY_ID, EMULATOR_SECRET),
                faults: Vec::new(),
                seed: 0,
                data_dir: None,
            }))
            .expect("start the emulator");
        let name = match provider {
            Provider::S3 => "emulator".to_string(),
            other => format!("emulator-{}", other.name()),
        };
        let url = emu.url.clone();
        Server::new(
            name,
            provider,
            url,
            bucket,
            "us-east-1",
            EMULATOR_KEY_ID,
            EMULATOR_SECRET,
            runtime,
            |_| Backend::Emulator(emu),
        )
    }

    /// The Garage `tests/garage/run.sh` started, from the environment it
    /// sets; `None` when the bench runs without it.
    pub fn garage(runtime: &Handle) -> Option<Server> {
        if std::env::var("BUCKETFS_TEST_BACKEND").ok()? != "garage" {
            return None;
        }
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
        Some(Server::new(
            "garage".into(),
            Provider::S3,
            var("BUCKETFS_GARAGE_ENDPOINT"),
            &var("BUCKETFS_GARAGE_BUCKET"),
            &var("BUCKETFS_GARAGE_REGION"),
            &var("BUCKETFS_GARAGE_KEY_ID"),
            &var("BUCKETFS_GARAGE_SECRET"),
            runtime,
            |client| Backend::Remote(client.clone()),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        provider: Provider,
        url: String,
        bucket: &str,
        region: &str,
        key_id: &str,
        secret: &str,
        runtime: &Handle,
        backend: impl FnOnce(&Arc<HttpStore>) -> Backend,
    ) -> Server {
        let client = http_client(&url, bucket, provider, key_id, secret, region);
        Server {
            name,
            provider,
            url,
            bucket: bucket.into(),
            region: region.into(),
            key_id: key_id.into(),
            secret: secret.into(),
            backend: backend(&client),
            client,
            runtime: runtime.clone(),
        }
    }

    /// A new direct client (its own connection pool), as a freshly
    /// started process would have.
    pub fn fresh_client(&self) -> Arc<HttpStore> {
        http_client(
            &self.url,
            &self.bucket,
            self.provider,
            &self.key_id,
            &self.secret,
            &self.region,
        )
    }

    fn backdoor(&self) -> &dyn ObjectStore {
        match &self.backend {
            Backend::Emulator(emu) => &emu.emulator.stores()[&self.bucket],
            Backend::Remote(store) => &**store,
        }
    }

    /// The emulator's counters; `None` on a server without them.
    pub fn counters(&self) -> Option<Counters> {
        let Backend::Emulator(emu) = &self.backend else {
            return None;
        };
        Some(
            emu.emulator
                .stats
                .snapshot()
                .into_iter()
                .map(|(op, c)| {
                    let count = OpCount {
                        requests: c.requests,
                        bytes_in: c.bytes_in,
                        bytes_out: c.bytes_out,
                    };
                    (op.to_string(), count)
                })
                .collect(),
        )
    }

    pub fn reset_counters(&self) {
        if let Backend::Emulator(emu) = &self.backend {
            emu.emulator.stats.reset();
        }
    }

    /// Stores `body` at each of `keys`; those ending in `/` are directory
    /// markers as s3fs's mkdir makes them: empty, of type
    /// `application/x-directory`. (rclone takes a marker with content for
    /// a file, and its `mv` of the directory then fails; s3fs takes an
    /// untyped marker on Garage, which sends no Content-Type for it, for a
    /// file, and then lists nothing under it.) The emulator shares the one
    /// buffer; a remote server gets them `SEED_PARALLEL` at a time.
    pub fn seed(&self, keys: &[String], body: &Bytes) {
        let seeded = |key: &str| {
            if key.ends_with('/') {
                let attributes = ObjectAttributes {
                    content_type: Some(DIRECTORY_TYPE.to_string()),
                    ..Default::default()
                };
                (Bytes::new(), attributes)
            } else {
                (body.clone(), ObjectAttributes::default())
            }
        };
        match &self.backend {
            Backend::Emulator(emu) => {
                let store = &emu.emulator.stores()[&self.bucket];
                for key in keys {
                    let (body, attributes) = seeded(key);
                    let etag = hex::encode(md5::Md5::digest(&body));
                    store.import_object(
                        key,
                        ObjectRecord {
                            body,
                            etag,
                            last_modified: SystemTime::now(),
                            content_type: attributes.content_type,
                            metadata: attributes.metadata,
                            object_type: ObjectType::Normal,
                            symlink_target: None,
                        },
                    );
                }
            }
            Backend::Remote(store) => self.runtime.block_on(async {
                let mut pending = keys.iter();
                let mut in_flight = tokio::task::JoinSet::new();
                loop {
                    while in_flight.len() < SEED_PARALLEL {
                        let Some(key) = pending.next() else { break };
                        let (store, key) = (store.clone(), key.clone());
                        let (body, attributes) = seeded(&key);
                        in_flight.spawn(async move { put(store, &key, body, attributes).await });
                    }
                    match in_flight.join_next().await {
                        Some(done) => done.expect("seeding task"),
                        None => break,
                    }
                }
            }),
        }
    }

    /// The size of `key` on the server, if it exists.
    pub fn size_of(&self, key: &str) -> Option<u64> {
        self.runtime
            .block_on(self.backdoor().head_object(key))
            .ok()
            .map(|meta| meta.size)
    }

    /// Every object under `prefix`, markers included.
    fn objects_under(&self, prefix: &str) -> Vec<ListEntry> {
        let mut objects = Vec::new();
        let mut request = ListRequest {
            prefix: prefix.into(),
            ..Default::default()
        };
        loop {
            let page = self
                .runtime
                .block_on(self.backdoor().list_objects(&request))
                .unwrap_or_else(|e| panic!("listing {prefix} through the back door: {e}"));
            objects.extend(page.objects);
            match page.next {
                Some(next) => request.continuation = Some(next),
                None => return objects,
            }
        }
    }

    /// The objects under `prefix` that are files (directory markers, keys
    /// ending in `/`, left out).
    pub fn files_under(&self, prefix: &str) -> Vec<ListEntry> {
        let mut files = self.objects_under(prefix);
        files.retain(|o| !o.key.ends_with('/'));
        files
    }

    /// Removes every object under `prefix`, up to 1,000 keys a request.
    pub fn delete_under(&self, prefix: &str) {
        let keys: Vec<String> = self
            .objects_under(prefix)
            .into_iter()
            .map(|o| o.key)
            .collect();
        for batch in keys.chunks(1000) {
            self.runtime
                .block_on(self.backdoor().delete_objects(batch))
                .unwrap_or_else(|e| panic!("deleting under {prefix}: {e}"));
        }
    }
}

/// The Content-Type s3fs's mkdir gives a directory marker.
const DIRECTORY_TYPE: &str = "application/x-directory";

/// A path-style client of the server that does not retry (a failure is
/// a finding, not something to ride out).
fn http_client(
    url: &str,
    bucket: &str,
    provider: Provider,
    key_id: &str,
    secret: &str,
    region: &str,
) -> Arc<HttpStore> {
    let mut config = HttpStoreConfig::new(
        url,
        bucket,
        Dialect::new(provider),
        Credentials::new(key_id, secret),
    );
    config.path_style = true;
    config.region = region.into();
    config.retry = RetryPolicy::none();
    Arc::new(HttpStore::new(config).expect("HttpStore"))
}

/// PutObject, or a multipart upload for a body larger than one part.
pub async fn put(store: Arc<HttpStore>, key: &str, body: Bytes, attributes: ObjectAttributes) {
    if body.len() as u64 > PART {
        return multipart_upload(store, key, body, &attributes).await;
    }
    store
        .put_object(&PutRequest {
            key: key.into(),
            body,
            attributes,
        })
        .await
        .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
}

/// Uploads `data` to `key` as a multipart upload of `PART`-sized parts,
/// `PARALLEL` in flight.
pub async fn multipart_upload(
    store: Arc<impl ObjectStore + 'static>,
    key: &str,
    data: Bytes,
    attributes: &ObjectAttributes,
) {
    let upload_id = store
        .create_multipart_upload(key, attributes)
        .await
        .expect("CreateMultipartUpload");
    let mut starts = (0..data.len()).step_by(PART as usize).enumerate();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    loop {
        while in_flight.len() < PARALLEL {
            let Some((i, start)) = starts.next() else {
                break;
            };
            let request = UploadPartRequest {
                key: key.into(),
                upload_id: upload_id.clone(),
                part_number: i as u32 + 1,
                body: data.slice(start..(start + PART as usize).min(data.len())),
            };
            let store = store.clone();
            in_flight.spawn(async move { store.upload_part(&request).await.expect("UploadPart") });
        }
        match in_flight.join_next().await {
            Some(done) => parts.push(done.expect("UploadPart task")),
            None => break,
        }
    }
    parts.sort_by_key(|p| p.part_number);
    store
        .complete_multipart_upload(&CompleteMultipartRequest {
            key: key.into(),
            upload_id,
            parts,
        })
        .await
        .expect("CompleteMultipartUpload");
}

use md5::Digest as _;
