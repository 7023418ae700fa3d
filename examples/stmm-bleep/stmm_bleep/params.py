"""The training-settings schema of the ``bleep`` family (pydantic only: read by ``stmm info``/``compose`` without
torch). A spec stores these settings in full under ``train``; unknown keys are errors naming the setting."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BleepTrainParams(BaseModel):
    """How a ``bleep`` pipeline is trained and how it predicts.

    The image and gene encoders (the spec's ``image`` and ``gene`` slots, any catalogue components) are used
    frozen; what is trained are two projection heads into a shared ``embed_dim`` space with a symmetric InfoNCE
    loss. Expression is predicted by retrieval: the similarity-weighted mean of the ``k`` training spots whose
    expression embeddings lie nearest to the query spot's image embedding.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds the heads' initialisation, batches and split")
    epochs: int = Field(50, ge=1, le=100_000, description="passes over the training spots")
    batch_size: int = Field(256, ge=2, le=65_536, description="spots per contrastive batch (the negatives)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-3, ge=0, description="AdamW weight decay")
    embed_dim: int = Field(64, ge=2, le=4096, description="width of the shared image-expression space")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout inside the projection heads")
    temperature: float = Field(0.1, gt=0, le=10, description="InfoNCE temperature (cosine similarities)")
    loss: Literal["bleep", "clip"] = Field(
        "bleep", description="bleep: soft targets softmax of the mean within-modality similarity (BLEEP); "
                             "clip: the diagonal as the only positive (CLIP)")
    val_fraction: float = Field(0.1, ge=0, lt=0.9,
                                description="training spots held out to keep the epoch of lowest loss")
    k: int = Field(100, ge=1, le=100_000, description="training spots averaged for a prediction")
    predict_temperature: float = Field(
        0.2, gt=0, le=100, description="softmax temperature of the neighbour weights (large: a plain mean)")
    n_targets: int = Field(300, ge=1, le=50_000, description="predicted genes: the highest mean log1p "
                                                            "expression over the training sections")
    n_eval_hvg: int = Field(50, ge=1, le=50_000, description="most variable targets (training sections), "
                                                            "reported apart by the benchmark")
    target_sum: float = Field(1e4, gt=0, description="targets are log1p(counts / total · target_sum)")
