"""Request and response bodies of POST /train and /jobs. The numbers in ``data`` are documented here
and checked with numpy in one pass (``service.jobs.requests``), never one by one through fields."""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from minigrad.format import LAYER_TYPES
from minigrad.training import LOSSES, OPTIMIZERS
from service.schemas import model_name_field

from .store import STATUSES

_ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}, "minItems": 1}


class ArchitectureLayerSchema(Schema):
    """One layer of a fresh model: a Linear with its sizes, or an activation."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(sorted(LAYER_TYPES)))
    in_features = fields.Integer(strict=True, validate=validate.Range(min=1))
    out_features = fields.Integer(strict=True, validate=validate.Range(min=1))

    @validates_schema
    def _sizes_only_on_linear(self, data, **kwargs):
        sizes = {"in_features", "out_features"}
        if data.get("type") == "Linear":
            missing = sorted(sizes - data.keys())
            if missing:
                raise ValidationError({name: ["required for a Linear layer"] for name in missing})
        else:
            extra = sorted(sizes & data.keys())
            if extra:
                raise ValidationError({name: [f"not allowed on {data.get('type')}"] for name in extra})


class DataSchema(Schema):
    class Meta:
        unknown = RAISE

    inputs = fields.Raw(required=True, metadata={**_ROWS, "description": "Rows of input features",
                                                 "example": [[0, 0], [0, 1], [1, 0], [1, 1]]})
    targets = fields.Raw(required=True, metadata={
        "description": "Rows of targets (one per input row, with the model's output width); a flat list is a "
                       "single-output column, or class indices with the cross_entropy loss",
        "example": [[0], [1], [1], [0]],
    })


class OptimizerSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(list(OPTIMIZERS)))
    alpha = fields.Float(validate=validate.Range(min=0, min_inclusive=False), allow_nan=False,
                         metadata={"description": "Learning rate (SGD default 0.1, Adam default 0.001)"})
    momentum = fields.Float(validate=validate.Range(min=0, max=1, max_inclusive=False),
                            metadata={"description": "SGD only"})
    weight_decay = fields.Float(validate=validate.Range(min=0), metadata={"description": "SGD only"})
    betas = fields.List(fields.Float(validate=validate.Range(min=0, max=1, max_inclusive=False)),
                        validate=validate.Length(equal=2), metadata={"description": "Adam only"})
    eps = fields.Float(validate=validate.Range(min=0, min_inclusive=False), metadata={"description": "Adam only"})

    @validates_schema
    def _options_of_the_type(self, data, **kwargs):
        only = {"sgd": {"momentum", "weight_decay"}, "adam": {"betas", "eps"}}
        kind = data.get("type")
        wrong = {name: [f"only for {other}, not {kind}"] for other, names in only.items() if other != kind
                 for name in sorted(names & data.keys())}
        if wrong:
            raise ValidationError(wrong)


class TrainRequestSchema(Schema):
    """POST /train: where the model starts (``model`` or ``architecture``), the data and how to train."""

    class Meta:
        unknown = RAISE

    model = model_name_field(metadata={"description": "Start from this registered model (fine-tuning)"})
    version = fields.Integer(strict=True, validate=validate.Range(min=1),
                             metadata={"description": "Version of `model`; the latest when absent"})
    architecture = fields.List(fields.Nested(ArchitectureLayerSchema), validate=validate.Length(min=1),
                               metadata={"description": "Start from fresh weights (drawn from `seed`)"})
    dtype = fields.String(validate=validate.OneOf(["float64", "float32"]),
                          metadata={"description": "With `architecture` only (default float64)"})
    data = fields.Nested(DataSchema, required=True)
    validation = fields.Nested(DataSchema, metadata={"description": "Held-out data for val_loss/val_accuracy"})
    validation_split = fields.Float(validate=validate.Range(min=0, max=1, min_inclusive=False, max_inclusive=False),
                                    metadata={"description": "Hold out this fraction of `data` (seeded shuffle)"})
    loss = fields.String(load_default="mse", validate=validate.OneOf(list(LOSSES)))
    optimizer = fields.Nested(OptimizerSchema, load_default=lambda: {"type": "sgd"})
    epochs = fields.Integer(strict=True, load_default=100, validate=validate.Range(min=1))
    batch_size = fields.Integer(strict=True, validate=validate.Range(min=1),
                                metadata={"description": "Default: the whole data set in one batch"})
    shuffle = fields.Boolean(load_default=True)
    seed = fields.Integer(strict=True, validate=validate.Range(min=0, max=2**63 - 1),
                          metadata={"description": "Seeds weights, split and shuffling; random (and recorded in "
                                                   "the job) when absent. Same request + seed: same model, bit "
                                                   "for bit"})
    save_as = model_name_field(metadata={"description": "Register the trained model as the next version of this name"})

    @validates_schema
    def _one_starting_point(self, data, **kwargs):
        errors = {}
        if ("model" in data) == ("architecture" in data):
            errors["model"] = ["give exactly one of 'model' (a registered model) or 'architecture' (fresh weights)"]
        if "version" in data and "model" not in data:
            errors["version"] = ["only with 'model'"]
        if "dtype" in data and "architecture" not in data:
            errors["dtype"] = ["only with 'architecture' (a registered model keeps its own dtype)"]
        if "validation" in data and "validation_split" in data:
            errors["validation_split"] = ["give 'validation' or 'validation_split', not both"]
        if errors:
            raise ValidationError(errors)


class WaitArgsSchema(Schema):
    wait = fields.Float(validate=validate.Range(min=0), allow_nan=False, metadata={
        "description": "Wait up to this many seconds (capped by MINIGRAD_MAX_WAIT_SECONDS) and answer 200 with "
                       "the finished job if it finished by then"})


# Pages past this are empty anyway; the bound keeps the row offset inside SQLite's 64-bit integers
# (an unbounded page was a 500 found by the API fuzzer: tests/test_api_fuzz.py).
MAX_PAGE = 10**9


class PageArgsSchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class StatusFilterField(fields.List):
    """Job statuses from a query string: the parameter repeated (``?status=failed&status=lost``), a
    comma-separated list (``?status=failed,lost``), or both. Loads to the distinct statuses in the order
    given; any other value is refused, with the allowed ones named."""

    def __init__(self, **kwargs):
        # The enum documents each value; it is checked below, after the commas are split.
        super().__init__(fields.String(metadata={"enum": list(STATUSES)}), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        given = [part.strip() for item in super()._deserialize(value, attr, data, **kwargs) for part in item.split(",")]
        unknown = [part for part in given if part not in STATUSES]
        if unknown:
            listed = ", ".join(repr(part) for part in dict.fromkeys(unknown))
            raise ValidationError(f"{listed}: not a job status; expected one or more of {', '.join(STATUSES)}")
        return list(dict.fromkeys(given))


class JobFilterArgsSchema(Schema):
    """``?status=``, as GET /jobs and the dashboard read it."""

    status = StatusFilterField(metadata={
        "description": "Only jobs with this status; repeat the parameter (`?status=failed&status=lost`) or "
                       "separate statuses with commas (`?status=failed,lost`) for jobs with any of them"})


class JobListArgsSchema(JobFilterArgsSchema, PageArgsSchema):
    """GET /jobs: a page of the jobs, of some statuses only when asked."""


class ProgressSchema(Schema):
    epoch = fields.Integer(required=True, metadata={"description": "Epochs finished so far"})
    epochs = fields.Integer(required=True)


class EpochSchema(Schema):
    epoch = fields.Integer(required=True)
    loss = fields.Float(required=True)
    val_loss = fields.Float()
    val_accuracy = fields.Float()
    seconds = fields.Float()


class TimingsSchema(Schema):
    created_at = fields.DateTime(required=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    heartbeat_at = fields.DateTime(allow_none=True)
    queued_seconds = fields.Float(allow_none=True, metadata={"description": "From submission to start"})
    running_seconds = fields.Float(allow_none=True, metadata={"description": "From start to finish (or now)"})


class RegisteredSchema(Schema):
    name = fields.String(required=True)
    version = fields.Integer(required=True)


class JobResultSchema(Schema):
    final_loss = fields.Float()
    epochs_run = fields.Integer()
    registered = fields.Nested(RegisteredSchema, allow_none=True,
                               metadata={"description": "Where `save_as` registered the model"})
    model_url = fields.String(metadata={"description": "GET it for the trained model document"})


class JobSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    progress = fields.Nested(ProgressSchema, required=True)
    cancel_requested = fields.Boolean(required=True)
    timings = fields.Nested(TimingsSchema, required=True)
    worker = fields.String(allow_none=True, metadata={"description": "host:pid of the consumer that ran it"})
    request = fields.Dict(required=True, metadata={"description": "The request without its data, with the "
                                                                  "seed and model version it resolved to"})
    error = fields.String(allow_none=True, metadata={"description": "Why the job failed or was lost"})
    result = fields.Nested(JobResultSchema, allow_none=True)
    history = fields.List(fields.Nested(EpochSchema), metadata={"description": "One record per finished epoch "
                                                                              "(GET /jobs/<id> only)"})
    url = fields.String(required=True)


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema), required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)
    next = fields.String(allow_none=True, metadata={"description": "URL of the next page, if any"})
