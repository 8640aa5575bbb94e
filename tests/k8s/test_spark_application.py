"""SparkApplications for the Kubeflow Spark Operator, offline: the kept CRD, the renderer, the image, the chart.

The manifests bidflow.deploy.spark_application renders are validated against the operator's own CRD schema
(tests/k8s/crds/, v2.5.2), made strict so that a misspelt field fails here instead of being pruned on the cluster.
The API-server side (the CRD applied, the manifests created, the submit-and-wait loop) is test_apiserver_spark.py.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bidflow.config import SparkExecutorResources, SparkKubernetesConfig, SparkPodResources
from bidflow.deploy import spark_application as sa
from bidflow.errors import ConfigError
from tests.k8s import spark_crd
from tests.k8s.cluster import REPO, Tools
from tests.k8s.test_chart import CHART, EKS_VERSION, schema_problems, template

IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/bidflow/bidflow-components:0.1.0"
S3_CONFIG = "paths:\n  raw: s3://bidflow-data/raw\n  parquet: s3://bidflow-data/parquet\n"


def render(step: str, settings: SparkKubernetesConfig | None = None, s3: bool = True) -> dict[str, Any]:
    name = sa.application_name(step, "run-1")
    return sa.spark_application(
        step,
        settings=settings or SparkKubernetesConfig(),
        name=name,
        image=IMAGE,
        config_map_name=f"{name}-config",
        s3=s3,
        spark_version="4.3.0",
    )


# --- the kept CRD -----------------------------------------------------------------------------------------------


def test_the_kept_crd_is_the_upstream_file_its_header_names() -> None:
    header, _ = spark_crd.header_and_body()
    for fact in ("kubeflow/spark-operator", "charts/spark-operator-chart/crds/", "v2.5.2", "Apache License 2.0"):
        assert fact in header, fact
    assert spark_crd.body_sha256() == spark_crd.recorded_sha256(), "the CRD below the header was edited"


def test_the_crd_serves_what_the_renderer_creates() -> None:
    definition = spark_crd.crd()
    assert definition["spec"]["group"] == sa.GROUP
    assert definition["spec"]["names"]["kind"] == sa.KIND
    assert definition["spec"]["names"]["plural"] == sa.PLURAL
    (version,) = definition["spec"]["versions"]
    assert version["name"] == sa.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}, "the submitter reads status written through the subresource"
    kubernetes_validate.validate(definition, EKS_VERSION, strict=True)


# --- the renderer against the CRD's schema ------------------------------------------------------------------------


@pytest.mark.parametrize("step", sa.STEPS)
def test_every_step_renders_a_valid_spark_application(step: str) -> None:
    manifest = render(step)
    assert spark_crd.problems(manifest) == []
    spec = manifest["spec"]
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    assert spec["mainApplicationFile"] == sa.LAUNCHER
    assert spec["arguments"] == [step, "--config", "/etc/bidflow/bidflow.yaml"]
    assert manifest["metadata"]["labels"][sa.STEP_LABEL] == step


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.driver.cores", "1", "'1' is not of type 'integer'"),
        ("spec.driver.cores", 0, "0 is less than the minimum of 1"),
        ("spec.type", "python", "'python' is not one of"),
        ("spec.restartPolicy.type", "Sometimes", "'Sometimes' is not one of"),
        ("spec.executor.instancse", 2, "Additional properties are not allowed ('instancse' was unexpected)"),
        ("spec.mainApplicationFiel", "x.py", "'mainApplicationFiel' was unexpected"),
    ],
)
def test_the_strict_schema_rejects_wrong_types_and_misspelt_fields(path: str, value: Any, message: str) -> None:
    manifest = render("features")
    *parents, last = path.split(".")
    node = manifest
    for part in parents:
        node = node[part]
    node[last] = value
    assert any(message in problem for problem in spark_crd.problems(manifest)), spark_crd.problems(manifest)


def test_a_missing_required_field_is_rejected() -> None:
    manifest = render("train")
    del manifest["spec"]["sparkVersion"]
    assert spark_crd.problems(manifest) == ["spec: 'sparkVersion' is a required property"]


def test_resources_retries_and_the_account_come_from_the_settings() -> None:
    settings = SparkKubernetesConfig(
        namespace="jobs",
        service_account="spark-jobs",
        driver=SparkPodResources(cores=2, memory="4g"),
        executor=SparkExecutorResources(instances=6, cores=4, memory="12g"),
        retries=2,
        ttl_s=600,
    )
    manifest = render("training-set", settings)
    assert spark_crd.problems(manifest) == []
    spec = manifest["spec"]
    assert manifest["metadata"]["namespace"] == "jobs"
    assert (spec["driver"]["cores"], spec["driver"]["memory"]) == (2, "4g")
    assert (spec["executor"]["instances"], spec["executor"]["cores"], spec["executor"]["memory"]) == (6, 4, "12g")
    assert spec["driver"]["serviceAccount"] == spec["executor"]["serviceAccount"] == "spark-jobs"
    assert spec["restartPolicy"] == {
        "type": "OnFailure", "onFailureRetries": 2, "onFailureRetryInterval": 30,
        "onSubmissionFailureRetries": 2, "onSubmissionFailureRetryInterval": 30,
    }  # fmt: skip
    assert spec["timeToLiveSeconds"] == 600
    assert render("train")["spec"]["restartPolicy"] == {"type": "Never"}


def test_the_pods_run_as_the_images_user_without_privileges() -> None:
    spec = render("train")["spec"]
    for role in ("driver", "executor"):
        context = spec[role]["securityContext"]
        assert context["runAsNonRoot"] and context["runAsUser"] == 10001
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}


def test_s3_paths_get_s3a_with_the_irsa_web_identity_provider() -> None:
    assert sa.uses_s3(S3_CONFIG) and sa.uses_s3("features:\n  offline_uri: s3a://b/f\n")
    assert not sa.uses_s3("paths:\n  raw: data/raw\n")
    with_s3 = render("train", s3=True)["spec"]
    assert with_s3["hadoopConf"]["fs.s3a.aws.credentials.provider"] == (
        "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider"
    )
    assert with_s3["hadoopConf"]["fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert "hadoopConf" not in render("train", s3=False)["spec"]


def test_the_config_is_mounted_from_its_configmap_in_every_pod() -> None:
    manifest = render("features")
    spec = manifest["spec"]
    assert spec["volumes"] == [{"name": "config", "configMap": {"name": f"{manifest['metadata']['name']}-config"}}]
    for role in ("driver", "executor"):
        assert spec[role]["volumeMounts"] == [{"name": "config", "mountPath": "/etc/bidflow", "readOnly": True}]


def test_the_configmap_holds_the_config_with_the_in_cluster_master() -> None:
    text = S3_CONFIG + "spark:\n  master: local[4]\n  shuffle_partitions: 64\n"
    doc = sa.config_map("bidflow-train-x-config", "bidflow", text)
    kubernetes_validate.validate(doc, EKS_VERSION, strict=True)
    stored = yaml.safe_load(doc["data"]["bidflow.yaml"])
    assert stored["spark"] == {"master": sa.IN_CLUSTER_MASTER, "shuffle_partitions": 64}
    assert stored["paths"] == yaml.safe_load(S3_CONFIG)["paths"]
    assert yaml.safe_load(sa.cluster_config_text(""))["spark"] == {"master": sa.IN_CLUSTER_MASTER}


@pytest.mark.parametrize("text", ["- a list", "spark: local", "a: [unclosed"])
def test_a_config_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        sa.cluster_config_text(text)


def test_names_are_short_dns_labels_and_unique_per_run() -> None:
    names = {sa.application_name(step, f"run-{i}") for step in sa.STEPS for i in range(50)}
    assert len(names) == 50 * len(sa.STEPS)
    for name in names:
        assert len(name) <= 40 and name.replace("-", "").isalnum() and name == name.lower(), name
    # Spark derives its driver pod and service names from it; both must stay within 63 characters.
    assert all(len(f"{n}-0123456789abcdef-driver-svc") <= 63 for n in names)


def test_unknown_steps_and_an_empty_image_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown Spark step"):
        sa.spark_step("evaluate")
    with pytest.raises(ConfigError, match="needs an image"):
        sa.spark_application(
            "train", settings=SparkKubernetesConfig(), name="x", image="", config_map_name="c", s3=False,
            spark_version="4.3.0",
        )  # fmt: skip
    assert sa.spark_step("training-set") == "training-set"


def test_the_steps_are_the_jobs_own() -> None:
    from bidflow.engines import spark_jobs

    assert sa.STEPS is spark_jobs.STEPS
    for step in sa.STEPS:  # every step the renderer allows parses on the job's own command line
        window = {} if step == "ingest" else {"since": "2026-11-02T00:00:00Z"}  # ingest takes every file
        options = sa.job_arguments(step, out="s3://bidflow-data/out", **window)
        parsed = spark_jobs.parser().parse_args([step, "--config", "/etc/bidflow/bidflow.yaml", *options])
        assert parsed.step == step


def test_job_options_are_passed_after_the_config() -> None:
    options = sa.job_arguments("training-set", kind="ctr", out="s3://b/ts", until="2026-11-02T06:00:00Z")
    assert options == ["--kind", "ctr", "--out", "s3://b/ts", "--until", "2026-11-02T06:00:00Z"]
    name = sa.application_name("training-set", "r")
    manifest = sa.spark_application(
        "training-set", settings=SparkKubernetesConfig(), name=name, image=IMAGE, config_map_name="c", s3=True,
        spark_version="4.3.0", arguments=options,
    )  # fmt: skip
    assert manifest["spec"]["arguments"] == ["training-set", "--config", "/etc/bidflow/bidflow.yaml", *options]
    assert spark_crd.problems(manifest) == []
    assert sa.job_arguments("train") == []
    with pytest.raises(ConfigError, match="needs an output location"):
        sa.job_arguments("training-set")
    with pytest.raises(ConfigError, match="takes no kind"):
        sa.job_arguments("features", kind="ctr")
    with pytest.raises(ConfigError, match="no time window"):
        sa.job_arguments("ingest", since="2026-11-02T00:00:00Z")
    assert sa.job_arguments("ingest", out="/data/parquet") == ["--out", "/data/parquet"]


def test_step_options_are_checked_against_the_jobs_parser() -> None:
    options = {"source": "s3://b/batch", "features": "", "no-register": True, "report": "s3://b/m.spark/report.json"}
    assert sa.job_arguments("train", kind="bid_filter", out="s3://b/m.spark/model", options=options) == [
        "--kind", "bid_filter", "--out", "s3://b/m.spark/model",
        "--source", "s3://b/batch", "--no-register", "--report", "s3://b/m.spark/report.json",
    ]  # fmt: skip
    assert sa.job_arguments("features", options={"batch": "s3://b/batch", "no-register": False}) == [
        "--batch",
        "s3://b/batch",
    ]
    # Refused here, not by the driver minutes later on the cluster.
    with pytest.raises(ConfigError, match="does not take these options") as refused:
        sa.job_arguments("features", options={"no-register": True})
    assert "unrecognized arguments: --no-register" in str(refused.value)
    with pytest.raises(ConfigError, match="does not take these options"):
        sa.job_arguments("train", options={"features": "everything"})


# --- the image the application runs in ------------------------------------------------------------------------


def test_the_component_image_ships_the_launcher_and_the_spark_entrypoint() -> None:
    dockerfile = (REPO / "components" / "Dockerfile").read_text(encoding="utf-8")
    launcher = sa.LAUNCHER.removeprefix("local://")
    assert f"COPY components/spark_launch.py {launcher}" in dockerfile
    assert 'ENTRYPOINT ["/opt/spark-entrypoint.sh"]' in dockerfile
    assert "openjdk-17-jre-headless" in dockerfile and "SPARK_HOME=/opt/spark" in dockerfile


def test_the_entrypoint_passes_other_commands_through(tmp_path: Any) -> None:
    """Kubeflow replaces the entrypoint; anything else that is not Spark's driver/executor runs as given."""
    done = subprocess.run(
        ["bash", str(REPO / "components" / "spark-entrypoint.sh"), "echo", "passed through"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout == "passed through\n"


def test_the_launcher_runs_the_spark_jobs_module_with_its_arguments(tmp_path: Any) -> None:
    """The launcher runs ``bidflow.engines.spark_jobs`` as __main__ with the application's arguments (a stand-in
    module of that name is put first on the path, so this checks the launcher, not the job)."""
    fake = tmp_path / "bidflow" / "engines"
    fake.mkdir(parents=True)
    (tmp_path / "bidflow" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "spark_jobs.py").write_text(
        "import json, sys\nif __name__ == '__main__':\n    print(json.dumps(sys.argv))\n"
    )
    done = subprocess.run(
        ["python3", str(REPO / "components" / "spark_launch.py"), "features", "--config", "/etc/bidflow/bidflow.yaml"],
        capture_output=True, text=True, check=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    argv = json.loads(done.stdout)
    assert argv[1:] == ["features", "--config", "/etc/bidflow/bidflow.yaml"]
    assert argv[0].endswith("spark_jobs.py")


# --- the chart ------------------------------------------------------------------------------------------------


SPARK_ON = [
    "--set", "sparkOperator.enabled=true",
    "--set", "sparkOperator.serviceAccount.irsaRoleArn=arn:aws:iam::111122223333:role/bidflow-spark",
]  # fmt: skip


def spark_objects(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs if "spark" in d["metadata"]["name"]}


@pytest.mark.integration
def test_the_chart_creates_nothing_for_spark_by_default(tools: Tools) -> None:
    docs, _ = template(tools)
    assert spark_objects(docs) == {}


@pytest.mark.integration
@pytest.mark.parametrize("values", [None, "values-eks.yaml"])
def test_the_chart_renders_the_spark_account_and_rbac_valid_at_the_eks_version(
    tools: Tools, values: str | None
) -> None:
    args = [*SPARK_ON, *(["--values", str(CHART / values)] if values else [])]
    docs, _ = template(tools, *args)
    found = spark_objects(docs)
    assert sorted(found) == [
        "Role/bidflow-spark-driver", "Role/bidflow-spark-submitter",
        "RoleBinding/bidflow-spark-driver", "RoleBinding/bidflow-spark-submitter",
        "ServiceAccount/bidflow-spark",
    ]  # fmt: skip
    assert [p for doc in found.values() for p in schema_problems(doc)] == []
    account = found["ServiceAccount/bidflow-spark"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/bidflow-spark")
    assert account["automountServiceAccountToken"] is True, "the driver creates its executors through the API"
    assert SparkKubernetesConfig().service_account == account["metadata"]["name"]
    runner = found["RoleBinding/bidflow-spark-submitter"]["subjects"]
    assert runner == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
    rules = found["Role/bidflow-spark-submitter"]["rules"]
    assert {"apiGroups": ["sparkoperator.k8s.io"], "resources": ["sparkapplications"],
            "verbs": ["create", "get", "list", "watch", "delete"]} in rules  # fmt: skip
    assert not any("secrets" in rule["resources"] for doc in found.values() for rule in doc.get("rules", []))
    lint = tools.run("helm", "lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in lint.stdout


@pytest.mark.integration
def test_bad_spark_values_fail_with_a_clear_message(tools: Tools) -> None:
    _, stderr = template(tools, "--set", "sparkOperator.pipelineRunner.serviceAccount=Not_A_Name", check=False)
    assert "sparkOperator.pipelineRunner.serviceAccount" in stderr or "/sparkOperator/pipelineRunner" in stderr
    _, stderr = template(tools, "--set", "sparkOperator.enable=true", check=False)
    assert "enable" in stderr
