"""Event files: a YAML front matter block plus a Markdown body -> a validated `Event`.

    ---
    title: London Public Meeting
    subject: "Invitation: London Public Meeting, 11 September"
    timezone: Europe/London
    starts_at: 2021-09-11T14:30
    venue: Calthorpe Arms
    address: 252 Grays Inn Rd, London, WC1X 8JR
    organiser: {name: CWO, email: events@example.org}
    ---

    Dear {{ subscriber.first_name | default("comrade", true) }}, ...

    --- reminder ---
    The meeting is tomorrow ...

An online event gives `online_url` (the join link) instead of `venue` and `address`; a
hybrid event gives all three.

RSVP (issue 14): `rsvp: true`, or any of `capacity`, `max_guests`, `rsvp_note_prompt`,
`rsvp_closes`, `reminder`, makes the invitation answerable ("I'll come", "Maybe", "Can't
come"); without them the message carries no RSVP links (a newsletter needs none).
Follow-up bodies are sections of the same file after a `--- reminder ---` or
`--- update ---` line, so an event and everything sent about it stay in one file.

Every problem is reported with the file and the line it is on, because organisers fix
these files by hand. `load_event` stops at the first problem; `parse_event` returns them
all (the template checks live in mailer.message.lint).
"""

from __future__ import annotations

import difflib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailer.errors import EventFileError, InputError
from mailer.message.event_errors import (
    ORGANISER_SHAPE,
    QUOTE_HINT,
    plain_message,
    shown,
    yaml_message,
)
from mailer.models import MessageKind
from mailer.safety import find_unsafe

DEFAULT_DURATION = timedelta(hours=2)
FENCE = "---"
_LOADER_FIELDS = frozenset(
    {"description", "slug", "path", "body_line", "sections", "section_lines"}
)
# Any of these keys makes the invitation answerable (unless `rsvp: false`).
RSVP_KEYS = frozenset({"capacity", "max_guests", "rsvp_note_prompt", "rsvp_closes", "reminder"})
_SECTION = re.compile(r"---[ \t]*(reminder|update)[ \t]*---[ \t]*")
_BEFORE = re.compile(r"(\d{1,4})\s*(minute|hour|day|week)s?\s+before", re.IGNORECASE)
_UNITS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
FOLLOW_UP_SUBJECT = {MessageKind.REMINDER: "Reminder", MessageKind.UPDATE: "Update"}
ONLINE_URL_GIVEN = "online_url_given"  # validation context key, see Event._place
_NAME_ADDRESS = re.compile(r"\s*(?P<name>[^<>]*?)\s*<\s*(?P<email>[^<>\s]+)\s*>\s*")


def _one_line(value: str) -> str:
    # These values reach the Subject header, the .ics and the HTML: no control characters.
    if (problem := find_unsafe(value)) is not None:
        raise ValueError(f"{problem}; write it on one line")
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


class Organiser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200)
    email: str

    _name = field_validator("name")(_one_line)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"{shown(value)} is not an email address: {exc}") from exc


class Event(BaseModel):
    """An event's front matter plus its Markdown body; times are aware, in `timezone`."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(max_length=200)
    subject: str = Field(max_length=400)
    timezone: str
    starts_at: datetime
    ends_at: datetime | None = None
    # Before venue and address: their validators read it (an online event needs neither).
    online_url: str | None = None
    # validate_default: a missing venue or address is an error unless the event is online.
    venue: str | None = Field(default=None, max_length=300, validate_default=True)
    address: str | None = Field(default=None, max_length=500, validate_default=True)
    map_url: str | None = None
    url: str | None = None
    preheader: str | None = Field(default=None, max_length=200)  # the inbox preview line
    organiser: Organiser
    layout: str = "default"
    # RSVP (issue 14); see the module docstring for when links appear.
    rsvp: bool | None = None
    capacity: int | None = Field(default=None, ge=1, le=100_000)
    max_guests: int = Field(default=0, ge=0, le=20)
    rsvp_note_prompt: str | None = Field(default=None, max_length=200)
    rsvp_closes: datetime | None = None
    reminder: timedelta | None = None
    # Filled in by load_event from the file itself, never from the front matter.
    description: str = ""
    slug: str = ""
    path: Path = Path()
    body_line: int = 1
    sections: dict[str, str] = Field(default_factory=dict)
    section_lines: dict[str, int] = Field(default_factory=dict)

    _strings = field_validator("title", "subject")(_one_line)

    @field_validator("organiser", mode="before")
    @classmethod
    def _organiser(cls, value: object) -> object:
        # `Name <address>` is how every mail program shows a sender, and it has one
        # reading, so it is taken as written rather than refused for not being a mapping.
        # A bare address is refused: the name is shown in the footer and the calendar.
        if not isinstance(value, str):
            return value
        found = _NAME_ADDRESS.fullmatch(value)
        name = found["name"].strip().strip("\"'").strip() if found else ""
        if found is None or not name:
            raise ValueError(
                f"{shown(value)} is not a name and an email address; write it as {ORGANISER_SHAPE}"
            )
        return {"name": name, "email": found["email"]}

    _prompt = field_validator("rsvp_note_prompt")(_one_line)

    @field_validator("reminder", mode="before")
    @classmethod
    def _reminder(cls, value: object) -> timedelta | None:
        if value is None:
            return None
        match = _BEFORE.fullmatch(str(value).strip())
        if not isinstance(value, str) or match is None:
            raise ValueError("write it like '1 day before' or '3 hours before'")
        return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])

    @model_validator(mode="after")
    def _rsvp_rules(self) -> Event:
        given = sorted(RSVP_KEYS & self.model_fields_set)
        if self.rsvp is False and given:
            raise ValueError(f"rsvp: false, yet {', '.join(given)} given (leave them out)")
        if self.rsvp_closes is not None and self.rsvp_closes > self.ends:
            raise ValueError("rsvp_closes: must not be after the event ends")
        return self

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r} (use a name like Europe/London)"
            ) from exc
        return value

    @field_validator("starts_at", "ends_at", "rsvp_closes")
    @classmethod
    def _localise(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        zone_name = info.data.get("timezone")
        if value is None or zone_name is None:
            return value
        zone = ZoneInfo(zone_name)
        if value.tzinfo is not None:
            # An offset that is not the zone's at that moment moves the event: written
            # "14:30+01:00" for a March meeting in London, it was sent as 1:30pm GMT.
            local = value.astimezone(zone)
            if local.utcoffset() != value.utcoffset():
                raise ValueError(
                    f"{value:%Y-%m-%d %H:%M} has the offset {value:%z}, but {zone_name} is "
                    f"at {local:%z} then; write the time as it reads in {zone_name}, "
                    "without an offset"
                )
        else:
            local = value.replace(tzinfo=zone)
            # A wall-clock time skipped when the clocks go forward does not exist; zoneinfo
            # would silently shift it by an hour, so say so instead.
            if local.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None) != value:
                raise ValueError(
                    f"{value:%Y-%m-%d %H:%M} does not exist in {zone_name} (clocks change)"
                )
        if (
            info.field_name == "ends_at"
            and (start := info.data.get("starts_at"))
            and local <= start
        ):
            raise ValueError("must be after starts_at")
        return local

    @field_validator("venue", "address")
    @classmethod
    def _place(cls, value: str | None, info: ValidationInfo) -> str | None:
        # An invalid online_url is missing from info.data; the context says it was given,
        # so its own error is not followed by a misleading "venue: required".
        online = info.data.get("online_url") is not None or bool(
            (info.context or {}).get(ONLINE_URL_GIVEN)
        )
        if value is not None:
            if info.field_name == "address" and info.data.get("venue", "") is None:
                raise ValueError("an address needs its venue (the name of the place) too")
            return _one_line(value)
        if info.field_name == "address" and info.data.get("venue"):
            raise ValueError(f"required: where is {info.data['venue']}?")
        if not online:
            raise ValueError(
                "required (an online-only event gives online_url instead of venue and address)"
            )
        return None

    @field_validator("map_url", "url", "online_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")) or find_unsafe(value) or " " in value:
            raise ValueError("must be a plain http(s):// URL")
        return value

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str) -> str:
        # The layout name becomes a file name: no paths.
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError("must be a plain name like 'default' (letters, digits, - and _)")
        return value

    @property
    def rsvp_enabled(self) -> bool:
        """Whether the invitation carries RSVP links: `rsvp: true` or any RSVP key."""
        return self.rsvp if self.rsvp is not None else bool(RSVP_KEYS & self.model_fields_set)

    @property
    def answers_close(self) -> datetime:
        """Until when answers can be given or changed: `rsvp_closes`, else the start."""
        return self.rsvp_closes if self.rsvp_closes is not None else self.starts_at

    @property
    def reminder_at(self) -> datetime | None:
        """When the reminder goes, from `reminder: N days before`; None without one."""
        return None if self.reminder is None else self.starts_at - self.reminder

    @property
    def identity(self) -> str:
        """What makes two event files the same event: the title, the start (as an
        instant), the venue and the address. A copy of the file under another name has the
        same identity; a new date is another event, and so is a meeting of the same title
        at the same time somewhere else (two branches: a review)."""
        import hashlib

        start = self.starts_at.astimezone(UTC).isoformat()
        parts = (self.title, start, self.venue or "", self.address or "")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    def for_message(self, kind: MessageKind) -> Event:
        """The event as `kind` sends it: a follow-up's body is its section of the file and
        its subject says what it is; the invitation is the event itself."""
        if kind is MessageKind.INVITATION:
            return self
        subject = self.subject if "{" in self.title else self.title
        changes: dict[str, object] = {"subject": f"{FOLLOW_UP_SUBJECT[kind]}: {subject}"}
        if kind.value in self.sections:
            changes.update(
                description=self.sections[kind.value], body_line=self.section_lines[kind.value]
            )
        elif kind is MessageKind.REMINDER:
            raise EventFileError(
                "no reminder to send: the event file has no '--- reminder ---' section",
                path=self.path,
                hint="End the invitation with a line '--- reminder ---' and write the "
                "reminder's text below it.",
            )
        return self.model_copy(update=changes)

    @property
    def ends(self) -> datetime:
        """`ends_at`, or the default duration after the start."""
        return self.ends_at if self.ends_at is not None else self.starts_at + DEFAULT_DURATION

    @property
    def place(self) -> str | None:
        """'Venue, address' for an event in a room; None for an online-only event."""
        return f"{self.venue}, {self.address}" if self.venue and self.address else None

    @property
    def location(self) -> str:
        """Where to go: the place, or for an online-only event its join link (what a
        calendar's LOCATION shows; most calendar apps make a URL there clickable)."""
        return self.place or self.online_url or ""


# -- reading the file -------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps: pydantic parses ISO 8601 and time zones."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _split(path: Path, text: str) -> tuple[str, str, int]:
    """(front matter, body, 1-based line of the body's first line)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != FENCE:
        raise EventFileError(
            "an event file starts with a '---' line, then the front matter, then '---'",
            path=path,
            line=1,
        )
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == FENCE:
            return "".join(lines[1:index]), "".join(lines[index + 1 :]), index + 2
    raise EventFileError("the front matter has no closing '---' line", path=path, line=1)


def _key_lines(front: str) -> dict[tuple[str, ...], int]:
    """Map each (nested) key to its 1-based line within the front matter."""
    found: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                loc = (*prefix, str(key.value))
                found[loc] = key.start_mark.line + 1
                walk(value, loc)

    root = yaml.compose(front, Loader=_Loader)
    if root is not None:
        walk(root, ())
    return found


def parse_event(path: Path) -> tuple[Event | None, list[InputError]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [EventFileError(f"cannot read the event file: {exc}", path=path)]
    try:
        front, body, body_line = _split(path, text)
        data: Any = yaml.load(front, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        lines = _key_lines(front)
    except EventFileError as exc:
        return None, [exc]
    except yaml.YAMLError as exc:
        message, index = yaml_message(exc, front)
        # The front matter starts on the file's second line.
        return None, [EventFileError(message, path=path, line=index + 2, hint=QUOTE_HINT)]
    if not isinstance(data, dict):
        return None, [
            EventFileError("the front matter must be 'key: value' lines", path=path, line=2)
        ]
    errors: list[InputError] = [
        EventFileError(f"{key}: not allowed in the front matter", path=path, line=lines[(key,)] + 1)
        for key in sorted(_LOADER_FIELDS & data.keys())
    ]
    fields = {k: v for k, v in data.items() if k not in _LOADER_FIELDS}
    body, sections, section_lines = _sections(body, body_line)
    errors += [
        EventFileError(f"'--- {name} ---' appears twice", path=path, line=line)
        for name, line in section_lines.items()
        if line < 0
    ]
    section_lines = {name: abs(line) for name, line in section_lines.items()}
    if "reminder" in data and "reminder" not in sections:
        errors.append(
            EventFileError(
                "reminder: the file has no '--- reminder ---' section to send",
                path=path,
                line=lines[("reminder",)] + 1,
            )
        )
    fields.update(
        description=body,
        slug=path.stem,
        path=path,
        body_line=body_line,
        sections=sections,
        section_lines=section_lines,
    )
    try:
        given = fields.get("online_url") is not None
        event = Event.model_validate(fields, context={ONLINE_URL_GIVEN: given})
    except ValidationError as exc:
        for problem in exc.errors():
            loc = tuple(str(part) for part in problem["loc"])
            # Missing keys have no line of their own: point at their parent or the fence.
            line = next((lines[loc[:n]] + 1 for n in range(len(loc), 0, -1) if loc[:n] in lines), 1)
            message = plain_message(problem)
            if problem["type"] == "extra_forbidden":
                message = _unknown_key(loc)
            errors.append(EventFileError(f"{'.'.join(loc)}: {message}", path=path, line=line))
        return None, sorted(errors, key=lambda error: error.line or 0)
    return (event, errors) if errors else (event, [])


def _sections(body: str, body_line: int) -> tuple[str, dict[str, str], dict[str, int]]:
    """(the invitation's body, follow-up bodies by name, the line each starts on). A name
    seen twice gets a negative line (reported as an error by the caller)."""
    parts: dict[str, list[str]] = {}
    starts: dict[str, int] = {}
    current: list[str] = []
    main = current
    for number, line in enumerate(body.splitlines(keepends=True), start=body_line):
        found = _SECTION.fullmatch(line.rstrip("\r\n"))
        if found is None:
            current.append(line)
            continue
        name = found.group(1)
        starts[name] = -number if name in starts else number + 1
        current = parts.setdefault(name, [])
    return "".join(main), {k: "".join(v) for k, v in parts.items()}, starts


def front_matter_keys(model: type[BaseModel] = Event) -> list[str]:
    """The keys an organiser may write, in the order the model declares them."""
    return [name for name in model.model_fields if name not in _LOADER_FIELDS]


def _unknown_key(loc: tuple[str, ...]) -> str:
    # pydantic says only "Extra inputs are not permitted": name what is allowed, and the
    # likely typo, so the organiser need not look it up.
    allowed = front_matter_keys(Organiser if loc[:1] == ("organiser",) else Event)
    close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    where = "organiser" if len(loc) > 1 else "the front matter"
    return f"unknown key{guess} ({where} takes: {', '.join(allowed)})"


def load_event(path: Path) -> Event:
    """Read and validate one event file; raise EventFileError (file, line) at the first problem."""
    event, errors = parse_event(path)
    if errors:
        raise errors[0]
    assert event is not None
    return event
