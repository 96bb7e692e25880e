//! Static checks of terraform/ with the field's own tools (Terraform itself is not installed
//! here): every file parses (python-hcl2), checkov reports no failed check and every skip is
//! justified, formatting follows `terraform fmt`, and the daemon's IAM policy grants exactly
//! the S3 actions that src/archive/s3.rs calls.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform")
}

fn tf_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(tf_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    v.sort();
    v
}

/// The file as python-hcl2 parses it, in JSON.
fn parse_hcl(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hcl2, json, sys; print(json.dumps(hcl2.load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("python3 (scripts/test.sh installs python-hcl2)");
    assert!(
        out.status.success(),
        "{} does not parse: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("hcl2 JSON")
}

/// An attribute's value: python-hcl2 wraps each attribute in a one-element list.
fn attr<'a>(block: &'a Value, key: &str) -> &'a Value {
    match &block[key] {
        Value::Array(a) if a.len() == 1 => &a[0],
        other => other,
    }
}

#[test]
fn every_terraform_file_parses_and_declares_what_a_team_needs() {
    let files = tf_files();
    assert!(files.len() >= 4, "{files:?}");
    let mut variables = Vec::new();
    let mut outputs = Vec::new();
    for f in &files {
        let doc = parse_hcl(f);
        for v in doc["variable"].as_array().into_iter().flatten() {
            for (name, body) in v.as_object().unwrap() {
                assert!(
                    attr(body, "description").is_string(),
                    "variable {name} has a description"
                );
                assert!(attr(body, "type").is_string(), "variable {name} has a type");
                variables.push(name.clone());
            }
        }
        for o in doc["output"].as_array().into_iter().flatten() {
            for (name, body) in o.as_object().unwrap() {
                assert!(
                    attr(body, "description").is_string(),
                    "output {name} has a description"
                );
                outputs.push(name.clone());
            }
        }
        if let Some(t) = doc["terraform"].as_array() {
            let t = &t[0];
            assert!(
                attr(t, "required_version").is_string(),
                "Terraform version pinned"
            );
            let aws = attr(&t["required_providers"][0], "aws");
            assert!(
                attr(aws, "version").as_str().unwrap().starts_with("~>"),
                "provider version pinned: {aws}"
            );
        }
    }
    for v in [
        "region",
        "transition_days",
        "expiration_days",
        "kms_key_arn",
        "create_host",
        "ssh_cidr_blocks",
        "create_access_key_user",
    ] {
        assert!(variables.contains(&v.to_string()), "variable {v}");
    }
    for o in ["bucket_name", "daemon_role_arn", "instance_id"] {
        assert!(outputs.contains(&o.to_string()), "output {o}");
    }
}

/// The S3 operations the daemon's code calls on its client, and the IAM action each needs.
fn iam_actions_used_by_the_daemon() -> BTreeSet<String> {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/archive/s3.rs"))
            .unwrap();
    let compact: String = src.chars().filter(|c| !c.is_whitespace()).collect();
    let mut ops = BTreeSet::new();
    for (i, _) in compact.match_indices(".client.") {
        let rest = &compact[i + ".client.".len()..];
        let op: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        ops.insert(op);
    }
    assert!(ops.contains("put_object"), "found the calls: {ops:?}");
    ops.into_iter()
        .map(|op| {
            match op.as_str() {
                // S3 authorizes the whole multipart flow with s3:PutObject.
                "put_object" | "create_multipart_upload" | "upload_part" | "complete_multipart_upload" => "s3:PutObject",
                "abort_multipart_upload" => "s3:AbortMultipartUpload",
                other => panic!("src/archive/s3.rs calls {other}: add its IAM action here and to terraform/iam.tf"),
            }
            .to_string()
        })
        .collect()
}

#[test]
fn the_daemon_policy_grants_exactly_the_s3_actions_its_code_calls_on_its_prefix() {
    let iam = parse_hcl(&tf_dir().join("iam.tf"));
    let docs = iam["data"].as_array().unwrap();
    let writer = docs
        .iter()
        .find_map(|d| d["aws_iam_policy_document"]["archive_writer"].as_object())
        .expect("archive_writer policy document");
    let statements = writer["statement"].as_array().expect("statements");
    let mut s3_actions = BTreeSet::new();
    for st in statements {
        assert_eq!(attr(st, "effect"), "Allow");
        for a in attr(st, "actions").as_array().unwrap() {
            let a = a.as_str().unwrap();
            assert!(!a.contains('*'), "no wildcard actions: {a}");
            if a.starts_with("s3:") {
                s3_actions.insert(a.to_string());
                let resources: Vec<&str> = attr(st, "resources")
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                assert_eq!(
                    resources,
                    vec!["${aws_s3_bucket.incidents.arn}/${var.archive_prefix}/*"],
                    "S3 actions only on the bundle prefix"
                );
            }
        }
    }
    // The KMS statement is dynamic (only with SSE-KMS) and limited to the given key.
    let dynamic = writer["dynamic"].as_array().map(|d| d.len()).unwrap_or(0);
    assert!(dynamic <= 1);
    assert_eq!(
        s3_actions,
        iam_actions_used_by_the_daemon(),
        "the policy grants exactly what the code calls"
    );

    // The role holds nothing else of ours but that policy (and optional SSM).
    let resources = iam["resource"].as_array().unwrap();
    let inline: Vec<_> = resources
        .iter()
        .filter(|r| {
            r.get("aws_iam_role_policy").is_some() || r.get("aws_iam_user_policy").is_some()
        })
        .collect();
    assert!(inline.is_empty(), "no inline policies: {inline:?}");
}

#[test]
fn checkov_finds_no_failed_check_and_every_skip_is_justified() {
    let out = Command::new("checkov")
        .args([
            "-d",
            tf_dir().to_str().unwrap(),
            "--compact",
            "--skip-download",
            "-o",
            "json",
            "--framework",
            "terraform",
        ])
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .expect("checkov (scripts/test.sh installs it)");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov JSON: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
        .collect();
    assert!(failed.is_empty(), "checkov failed checks: {failed:#?}");
    assert_eq!(report["summary"]["parsing_errors"], 0);
    assert!(
        report["summary"]["passed"].as_u64().unwrap() > 30,
        "{}",
        report["summary"]
    );
    for s in report["results"]["skipped_checks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let why = s["check_result"]["suppress_comment"].as_str().unwrap_or("");
        assert!(
            why.len() >= 30,
            "skip of {} at {} needs a real justification, got {why:?}",
            s["check_id"],
            s["resource"]
        );
    }
}

/// `terraform fmt` style: two-space indents, no tabs, no trailing spaces, and the `=` of
/// consecutive one-line attributes in a block aligned.
#[test]
fn terraform_files_are_formatted_like_terraform_fmt() {
    for f in tf_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let lines: Vec<&str> = text.lines().collect();
        let mut group: Vec<(usize, usize)> = vec![]; // (line, column of '=')
        let mut group_indent = usize::MAX;
        let flush = |group: &mut Vec<(usize, usize)>| {
            if let Some(&(_, col)) = group.first() {
                for &(ln, c) in group.iter() {
                    assert_eq!(
                        c,
                        col,
                        "{name}:{}: '=' not aligned with line {}",
                        ln + 1,
                        group[0].0 + 1
                    );
                }
            }
            group.clear();
        };
        for (i, line) in lines.iter().enumerate() {
            assert!(!line.contains('\t'), "{name}:{}: tab", i + 1);
            assert!(!line.ends_with(' '), "{name}:{}: trailing space", i + 1);
            let indent = line.len() - line.trim_start().len();
            assert_eq!(indent % 2, 0, "{name}:{}: indent of {indent}", i + 1);
            let t = line.trim_start();
            let is_attr = !t.starts_with('#')
                && t.find(" = ").is_some_and(|eq| {
                    let key = t[..eq].trim_end();
                    !key.is_empty()
                        && key.chars().all(|c| {
                            c.is_ascii_alphanumeric()
                                || c == '_'
                                || c == '"'
                                || c == '-'
                                || c == '.'
                        })
                });
            let one_line = is_attr
                && !t.ends_with('{')
                && !t.ends_with('[')
                && !t.ends_with('(')
                && !t.contains("<<");
            if one_line && indent == group_indent {
                group.push((
                    i,
                    line.find(" = ").unwrap()
                        + line[line.find(" = ").unwrap()..].find('=').unwrap(),
                ));
            } else {
                flush(&mut group);
                group_indent = usize::MAX;
                if one_line {
                    group_indent = indent;
                    group.push((i, line.find(" = ").unwrap() + 1));
                }
            }
        }
        flush(&mut group);
        assert!(
            text.ends_with('\n') && !text.ends_with("\n\n"),
            "{name}: one final newline"
        );
    }
}
