"""Workload kinds whose pod template becomes endpoints.

Deployment, ReplicaSet and StatefulSet make ``replicas`` pods (default 1); DaemonSet makes one
(the model has one node); Job makes ``parallelism`` pods (default 1); CronJob makes one (one
active run). Pods are named ``<workload>-<index>`` and carry the labels the controllers add
(``pod-template-hash``, ``statefulset.kubernetes.io/pod-name``, ``controller-uid``,
``job-name``, ...), because those labels decide identity cardinality under Cilium's label filter.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import field_validator

from compiler.inputs.base import LooseModel, ObjectMeta
from compiler.inputs.pod import PodTemplate

KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")


class WorkloadSpec(LooseModel):
    replicas: int | None = None
    parallelism: int | None = None
    template: PodTemplate | None = None
    jobTemplate: JobTemplate | None = None

    @field_validator("replicas", "parallelism")
    @classmethod
    def _non_negative(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must not be negative")
        return value


class JobSpec(LooseModel):
    parallelism: int | None = None
    template: PodTemplate


class JobTemplate(LooseModel):
    metadata: ObjectMeta | None = None
    spec: JobSpec


WorkloadSpec.model_rebuild()


class WorkloadObject(LooseModel):
    apiVersion: Literal["apps/v1", "batch/v1", "extensions/v1beta1", "apps/v1beta2", "batch/v1beta1"]
    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]
    metadata: ObjectMeta
    spec: WorkloadSpec

    def pod_template(self) -> PodTemplate | None:
        if self.kind == "CronJob":
            return self.spec.jobTemplate.spec.template if self.spec.jobTemplate else None
        return self.spec.template

    def pod_count(self) -> int:
        if self.kind in ("Deployment", "ReplicaSet", "StatefulSet"):
            return 1 if self.spec.replicas is None else self.spec.replicas
        if self.kind == "Job":
            return 1 if self.spec.parallelism is None else self.spec.parallelism
        if self.kind == "CronJob" and self.spec.jobTemplate is not None:
            parallelism = self.spec.jobTemplate.spec.parallelism
            return 1 if parallelism is None else parallelism
        return 1

    def controller_labels(self, index: int, pod_name: str) -> dict[str, str]:
        """Labels the Kubernetes controllers add to the pods they create."""
        digest = hashlib.sha256(f"{self.metadata.namespace}/{self.metadata.name}".encode()).hexdigest()
        uid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        if self.kind in ("Deployment",):
            return {"pod-template-hash": digest[:10]}
        if self.kind == "StatefulSet":
            return {
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(index),
                "controller-revision-hash": f"{self.metadata.name}-{digest[:10]}"[:63],
            }
        if self.kind == "DaemonSet":
            return {"controller-revision-hash": digest[:10], "pod-template-generation": "1"}
        if self.kind in ("Job", "CronJob"):
            job = self.metadata.name or ""
            if self.kind == "CronJob":
                job = f"{job}-{int(digest[:7], 16) % 100000000:08d}"[:63]
            return {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": job,
                "controller-uid": uid,
                "job-name": job,
            }
        return {}
