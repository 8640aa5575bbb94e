#!/usr/bin/env bash
# ENTRYPOINT of the component image, for Spark on Kubernetes. Spark creates the driver and executor pods with
# arguments only ("driver ..." / "executor"), relying on the image's entrypoint to start them, as the one in
# Spark's own images (resource-managers/kubernetes/docker/src/main/dockerfiles/spark/entrypoint.sh) does; this is
# the part of it bidflow needs. Kubeflow sets the command of its tasks, which replaces this entrypoint entirely.
set -euo pipefail

case "${1:-}" in
    driver)
        shift
        exec "$SPARK_HOME/bin/spark-submit" \
            --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
            --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
            --deploy-mode client \
            "$@"
        ;;
    executor)
        shift
        # Spark passes the executor's JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in order.
        java_opts=()
        while IFS='=' read -r -d '' key value; do
            if [[ "$key" == SPARK_JAVA_OPT_* ]]; then java_opts[${key#SPARK_JAVA_OPT_}]="$value"; fi
        done < <(env -0)
        exec java "${java_opts[@]}" -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
            -cp "${SPARK_CLASSPATH:-}:$SPARK_HOME/jars/*" \
            org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
            --driver-url "$SPARK_DRIVER_URL" \
            --executor-id "$SPARK_EXECUTOR_ID" \
            --cores "$SPARK_EXECUTOR_CORES" \
            --app-id "$SPARK_APPLICATION_ID" \
            --hostname "$SPARK_EXECUTOR_POD_IP" \
            --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
            --podName "$SPARK_EXECUTOR_POD_NAME"
        ;;
    *)
        exec "$@"
        ;;
esac
