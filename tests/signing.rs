//! Signer conformance: every case of every `*.json` vector file must produce
//! the SDK's exact `Authorization` value.
//!
//! Reads `../shared/vectors` or the directory in `BUCKETFS_VECTORS`. A file
//! whose name maps to no known algorithm fails the test instead of being
//! skipped, so a new vector set cannot pass by being ignored.

use bucketfs::store::credentials::Credentials;
use bucketfs::store::sign::{self, RequestParts, SignatureVersion, Signer};
use serde_json::Value;
use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    match std::env::var_os("BUCKETFS_VECTORS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"),
    }
}

fn version_for(file_stem: &str) -> Option<SignatureVersion> {
    Some(match file_stem {
        "s3v4" => SignatureVersion::S3V4,
        "s3v2" => SignatureVersion::S3V2,
        "oss_v1" => SignatureVersion::OssV1,
        "oss_v4" => SignatureVersion::OssV4,
        "obs" => SignatureVersion::Obs,
        "obs_v2" => SignatureVersion::ObsV2,
        "cos" => SignatureVersion::Cos,
        _ => return None,
    })
}

fn str_field<'a>(case: &'a Value, name: &str) -> Option<&'a str> {
    case.get(name).and_then(Value::as_str)
}

fn header_pairs(case: &Value, field: &str) -> Vec<(String, String)> {
    case.get(field)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The request and credentials of one case. `with_unsigned` adds the headers
/// the SDK sent but did not sign.
fn case_request(case: &Value, with_unsigned: bool) -> Result<(RequestParts, Credentials), String> {
    let name = str_field(case, "name").unwrap_or("?");
    let mut headers = header_pairs(case, "headers");
    if with_unsigned {
        headers.extend(header_pairs(case, "unsigned_headers"));
    }
    let query = case["query"]
        .as_array()
        .ok_or(format!("{name}: query is not a list"))?
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_string(),
                pair[1].as_str().map(str::to_string),
            )
        })
        .collect();
    let req = RequestParts {
        method: str_field(case, "method").unwrap_or_default().to_string(),
        bucket: str_field(case, "bucket").map(str::to_string),
        key: str_field(case, "key").map(str::to_string),
        path: str_field(case, "path").unwrap_or_default().to_string(),
        query,
        headers,
    };
    let mut creds = Credentials::new(
        str_field(case, "access_key_id").unwrap_or_default(),
        str_field(case, "secret_access_key").unwrap_or_default(),
    );
    if let Some(token) = str_field(case, "security_token") {
        creds = creds.with_session_token(token);
    }
    Ok((req, creds))
}

/// Signs one case; returns a description of the mismatch, if any.
fn check_case(version: SignatureVersion, case: &Value) -> Result<(), String> {
    let name = str_field(case, "name").unwrap_or("?");
    // SigV4 signs what it is given; every other algorithm picks its own
    // headers and must ignore the ones it does not sign.
    let (req, creds) = case_request(case, version != SignatureVersion::S3V4)?;
    let signer = Signer::new(version, str_field(case, "region").unwrap_or_default());
    let now = case["timestamp_unix"]
        .as_i64()
        .ok_or(format!("{name}: no timestamp_unix"))?;
    let got = signer.authorization(&req, &creds, now);
    let want = str_field(case, "expected_authorization").unwrap_or_default();
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{name}:\n   got  {got}\n   want {want}\n   sdk string-to-sign {:?}\n   sdk canonical {:?}",
            str_field(case, "string_to_sign"),
            str_field(case, "canonical_request")
        ))
    }
}

#[test]
fn every_vector_file_signs_exactly_like_the_sdk() {
    for_every_case(check_case);
}

/// The server side: every SDK request, as sent (unsigned headers included),
/// verifies; with another secret it does not.
#[test]
fn every_vector_request_verifies_on_the_server_side() {
    for_every_case(|version, case| {
        let name = str_field(case, "name").unwrap_or("?");
        let (mut req, creds) = case_request(case, true)?;
        let auth = str_field(case, "expected_authorization").unwrap_or_default();
        req.headers.push(("Authorization".into(), auth.into()));
        let is_obs = matches!(version, SignatureVersion::Obs | SignatureVersion::ObsV2);
        let parsed = sign::verify(&req, is_obs, |ak| {
            (ak == creds.access_key_id).then(|| creds.clone())
        })
        .map_err(|e| format!("{name}: refused: {e:?}"))?;
        if parsed.version != version {
            return Err(format!("{name}: parsed as {:?}", parsed.version));
        }
        let wrong = Credentials::new(creds.access_key_id.clone(), "wrong-secret");
        match sign::verify(&req, is_obs, |_| Some(wrong.clone())) {
            Err(sign::VerifyError::Mismatch) => {}
            other => return Err(format!("{name}: wrong secret gave {other:?}")),
        }
        match sign::verify(&req, is_obs, |_| None) {
            Err(sign::VerifyError::UnknownAccessKey(_)) => Ok(()),
            other => Err(format!("{name}: unknown key gave {other:?}")),
        }
    });
}

/// Runs `check` on every case of every vector file and fails with all
/// mismatches at once.
fn for_every_case(check: impl Fn(SignatureVersion, &Value) -> Result<(), String>) {
    let dir = vectors_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read vector directory {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.json vector files in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let Some(version) = version_for(stem) else {
            failures.push(format!(
                "{}: unknown vector file (no signer for it)",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("vector file is readable");
        let cases: Vec<Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a JSON array: {e}", file.display()));
        assert!(!cases.is_empty(), "{}: no cases", file.display());
        for case in &cases {
            checked += 1;
            if let Err(msg) = check(version, case) {
                failures.push(format!("{stem} {msg}"));
            }
        }
    }
    println!("checked {checked} cases in {} files", files.len());
    assert!(
        failures.is_empty(),
        "{} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_wrong_secret_gives_a_different_signature() {
    let req = RequestParts {
        method: "GET".into(),
        bucket: Some("b".into()),
        key: Some("k".into()),
        path: "/k".into(),
        headers: vec![("Date".into(), "Tue, 05 Mar 2024 07:24:19 GMT".into())],
        ..Default::default()
    };
    for v in SignatureVersion::ALL {
        let signer = Signer::new(v, "r");
        let a = signer.authorization(&req, &Credentials::new("AK", "one"), 1709623459);
        let b = signer.authorization(&req, &Credentials::new("AK", "two"), 1709623459);
        assert_ne!(a, b, "{v:?}");
        assert!(!a.contains("one"), "{v:?} leaks the secret: {a}");
    }
}
