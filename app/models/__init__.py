"""SQLAlchemy tables, one file per table; importable without FastAPI."""

from app.models.api_key import ApiKey
from app.models.base import Base
from app.models.dataset import Dataset
from app.models.dataset_record import DatasetRecord
from app.models.evaluation import Evaluation
from app.models.job import FINAL_STATES, Job, JobState
from app.models.job_event import JobEvent
from app.models.model_alias import ModelAlias
from app.models.model_version import ModelVersion
from app.models.registered_model import RegisteredModel
from app.models.worker_heartbeat import WorkerHeartbeat

__all__ = ["ApiKey", "Base", "Dataset", "DatasetRecord", "Evaluation", "FINAL_STATES", "Job",
           "JobEvent", "JobState", "ModelAlias", "ModelVersion", "RegisteredModel",
           "WorkerHeartbeat"]
