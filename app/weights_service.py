"""What the API does with trained weights: upload (checked, stored once), list, look up, and the check
of a search that names some.

Weights are a state dict of the full network (`engine.initial_weights`).  The upload is read the
safe way (``weights_only=True``, or safetensors) and its tensor shapes kept in the database, so a
search naming it is checked at submit time against the network it will train, built on the meta
device, without touching the file: a tensor of another shape is a 422 naming the key and both
shapes.  The file itself goes to ``Settings.weights_root/<sha256>`` inside the work folder every
worker reads; the same bytes uploaded again by the same owner return the first upload.
"""

from __future__ import annotations

import os
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import User
from app.listing import get_owned, newest_first, owned
from app.spec_validation import FieldError
from app.uploads import SpooledUpload
from engine.initial_weights import WeightsError, check_fits, read_state_dict, shapes_of, weights_format
from engine.spec import SearchSpec
from models.supernet import NetSpec
from store.settings import Settings
from store.tables import WeightsRow


def store(
    session: Session, settings: Settings, user: User, upload: SpooledUpload, name: str | None
) -> tuple[WeightsRow, bool]:
    """(row, created): ``upload`` checked and kept for ``user``, or the row of the same bytes they sent before."""
    try:
        existing = _by_sha256(session, user.name, upload.sha256)
        if existing is not None:
            return existing, False
        try:
            state = read_state_dict(upload.path)
        except WeightsError as err:
            raise FieldError(("body",), err.args[0]) from None
        with upload.path.open("rb") as handle:
            fmt = weights_format(handle.read(9), upload.size)
        os.replace(upload.path, settings.weights_root / upload.sha256)  # same bytes, same name: idempotent
    finally:
        upload.discard()
    row = WeightsRow(
        id=uuid.uuid4().hex,
        owner=user.name,
        name=name,
        sha256=upload.sha256,
        format=fmt,
        size_bytes=upload.size,
        tensors=len(state),
        shapes=shapes_of(state),
        parameters=sum(t.numel() for t in state.values() if t.is_floating_point()),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # the same bytes raced in from a concurrent upload by the same owner
        session.rollback()
        return _by_sha256(session, user.name, upload.sha256), False
    return row, True


def _by_sha256(session: Session, owner: str, sha256: str) -> WeightsRow | None:
    return session.scalar(select(WeightsRow).where(WeightsRow.owner == owner, WeightsRow.sha256 == sha256))


def get_visible(session: Session, user: User, weights_id: str) -> WeightsRow:
    """The weights if they exist and ``user`` owns them (admins see all); else `NotFound`."""
    return get_owned(session, WeightsRow, weights_id, user, "weights")


def list_visible(
    session: Session, user: User, owner: str | None, limit: int, offset: int
) -> tuple[list[WeightsRow], int]:
    """Newest first; users see theirs, admins all (or one owner's)."""
    return newest_first(session, WeightsRow, user, owner, limit, offset)


def check_for_search(session: Session, user: User, spec: SearchSpec, num_classes: int) -> None:
    """The weights ``spec`` names exist for ``user`` and fit the network the search trains; else
    `FieldError` on the field at fault (a head of another class count is fine: it is replaced)."""
    where = ("body", "weights")
    row = owned(session, WeightsRow, spec.weights, user)
    if row is None:
        raise FieldError(where, f"no weights {spec.weights} (upload them: POST /weights)")
    if spec.train.mode == "snet":
        raise FieldError(
            ("body", "train", "mode"),
            "S-Net's switchable BN has no counterpart in a plain network's "
            "weights; use usnet-nonuniform, usnet or mutual",
        )
    net = NetSpec.from_dict(spec.network(num_classes))
    try:
        check_fits(net, row.shapes)
    except WeightsError as err:
        raise FieldError(where, f"weights {row.id} do not fit {spec.arch}: {err}") from None
