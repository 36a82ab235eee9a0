"""Batch transform: what the server tells SageMaker through GET /execution-parameters."""

from __future__ import annotations

from dataclasses import dataclass

PAYLOAD_TIMES_CONCURRENCY_LIMIT = 100  # SageMaker: MaxPayloadInMB <= 100 and concurrency x payload <= 100


@dataclass(frozen=True)
class ExecutionParameters:
    max_concurrent_transforms: int
    batch_strategy: str
    max_payload_mb: int

    @classmethod
    def for_server(
        cls, workers: int, max_payload_mb: int, batch_strategy: str, max_concurrent: int | None = None
    ) -> ExecutionParameters:
        """One concurrent request per worker (more would only queue), unless configured; the payload is
        cut so that concurrency x payload stays within SageMaker's limit."""
        concurrency = min(max_concurrent or workers, PAYLOAD_TIMES_CONCURRENCY_LIMIT)
        payload = max(1, min(max_payload_mb, PAYLOAD_TIMES_CONCURRENCY_LIMIT // concurrency))
        return cls(concurrency, batch_strategy, payload)

    def to_json(self) -> dict[str, object]:
        return {
            "MaxConcurrentTransforms": self.max_concurrent_transforms,
            "BatchStrategy": self.batch_strategy,
            "MaxPayloadInMB": self.max_payload_mb,
        }
