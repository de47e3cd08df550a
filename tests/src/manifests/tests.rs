//! The checker itself, on fixtures: a typo or a wrong type must fail, naming what and where.
use super::{Object, check, parse_documents};

const FIXTURE_DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: memtrace, namespace: memtrace}
spec:
  selector: {matchLabels: {app: memtrace}}
  template:
    metadata: {labels: {app: memtrace}}
    spec:
      containers:
        - name: memtrace
          image: memtrace:0.1.0
          ports: [{name: http, containerPort: 9847}]
          securityContext: {readOnlyRootFilesystem: true}
"#;

fn fixture(yaml: &str) -> Object {
    let objects = parse_documents("fixture.yaml", yaml).expect("fixture parses");
    let [object] = objects.as_slice() else {
        panic!("one object");
    };
    object.clone()
}

#[test]
fn the_checker_accepts_the_fixture_it_corrupts_below() {
    check(&fixture(FIXTURE_DAEMONSET)).expect("a valid DaemonSet");
}

#[test]
fn a_misspelt_field_fails_naming_source_object_and_path() {
    let typo = FIXTURE_DAEMONSET.replace("readOnlyRootFilesystem", "readOnlyRootFilesytem");
    let err = check(&fixture(&typo)).expect_err("a misspelt field");
    assert_eq!(
        err.trim(),
        "fixture.yaml: DaemonSet memtrace/memtrace: unknown field \
         spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem"
    );
    let err = check(&fixture(
        &FIXTURE_DAEMONSET.replace("selector:", "selecter:"),
    ))
    .expect_err("a misspelt required field");
    assert!(
        err.contains("fixture.yaml: DaemonSet memtrace/memtrace: "),
        "{err}"
    );
    assert!(
        err.contains("selecter") || err.contains("selector"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_fails_naming_the_path() {
    let wrong = FIXTURE_DAEMONSET.replace("containerPort: 9847", "containerPort: http");
    let err = check(&fixture(&wrong)).expect_err("a string for an integer");
    assert!(
        err.starts_with(
            "fixture.yaml: DaemonSet memtrace/memtrace: \
             spec.template.spec.containers[0].ports[0].containerPort: invalid type: string \"http\""
        ),
        "{err}"
    );
    let wrong = FIXTURE_DAEMONSET.replace(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: [yes]",
    );
    let err = check(&fixture(&wrong)).expect_err("a list for a bool");
    assert!(
        err.contains("spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem: invalid type: sequence"),
        "{err}"
    );
}

#[test]
fn an_unknown_kind_and_a_misspelt_service_monitor_field_fail() {
    let err = check(&fixture("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"))
        .expect_err("a kind the manifests never use");
    assert!(
        err.contains("apiVersion v1 kind Pod is not a kind this check knows"),
        "{err}"
    );
    let monitor = "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\n\
                   metadata: {name: m, namespace: memtrace}\n\
                   spec:\n  selector: {matchLabels: {a: b}}\n  endpoints:\n    - {port: http, intervall: 30s}\n";
    let err = check(&fixture(monitor)).expect_err("intervall");
    assert!(
        err.starts_with(
            "fixture.yaml: ServiceMonitor memtrace/m: spec.endpoints[0].intervall: unknown field \
             `intervall`, expected one of `port`, `path`, `scheme`, `interval`,"
        ),
        "{err}"
    );
    let err = check(&fixture(&monitor.replace("intervall: 30s", "scheme: htps")))
        .expect_err("a scheme the CRD's enum lacks");
    assert!(
        err.contains("spec.endpoints[0].scheme: unknown variant `htps`"),
        "{err}"
    );
}
