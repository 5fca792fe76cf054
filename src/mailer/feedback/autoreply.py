"""Auto-replies (RFC 3834) and out-of-office notices: never a bounce.

A vacation notice says the reader is away, not that the address is dead; taking it for a
bounce would drop good readers every summer. The markers:

- `Auto-Submitted: auto-replied` (RFC 3834);
- `X-Autoreply`, `X-Autorespond`, `X-AutoReply-From`, `X-Mail-Autoreply` (vacation(1),
  cPanel, Dovecot's and Zimbra's responders);
- `Precedence: auto_reply` / `X-Precedence: auto_reply`;
- a Subject that says so: Exchange's "Automatic reply:", "Out of Office", and their
  common translations.

Some MTAs mark their bounces `Auto-Submitted: auto-replied` too (Postfix, mail.ru,
Vade Secure: see the samples), so a marker counts only when the message is not from a
mail system (MAILER-DAEMON, postmaster, "Mail Delivery ..."): those go to the bounce
detectors.
"""

from __future__ import annotations

import re
from email.message import Message

from mailer.feedback.mime import header_text

_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-AutoReply-From", "X-Mail-Autoreply")
_AUTO_SUBJECT = re.compile(
    r"\b(?:"
    r"auto(?:matic|matische|matisch)?[ -]?(?:reply|response|antwort|antwoord)"
    r"|out of (?:the )?office|away from (?:my|the) (?:desk|office)|on (?:vacation|holiday)"
    r"|abwesenheit\w*|r[ée]ponse automatique|absence|respuesta autom[áa]tica"
    r"|risposta automatica|fuori sede|afwezig\w*|resposta autom[áa]tica"
    r"|automaattinen vastaus|autosvar|automatyczna odpowied[źz]|nieobecno\w*"
    r")\b",
    re.IGNORECASE,
)
# Searched in the raw From value (display name and address alike): parsing the address
# costs more than the rest of this module, and these words mark a server either way.
_MAIL_SYSTEM = re.compile(
    r"mailer-?daemon|mail-daemon|postmaster|\bmdaemon\b|mail delivery|mail system"
    r"|(?<![\w.+-])bounces?@",
    re.IGNORECASE,
)


def auto_reply_reason(message: Message) -> str | None:
    """Why `message` is an auto-reply, or None when it is not one."""
    if from_mail_system(message):
        return None
    present = {name.lower() for name in message}  # one pass, not one per header
    if "auto-submitted" in present:
        auto_submitted = header_text(message, "Auto-Submitted").strip().lower()
        if auto_submitted.startswith("auto-replied"):
            return "Auto-Submitted: auto-replied"
    for name in _AUTO_HEADERS:
        if name.lower() in present:
            return name
    for name in ("Precedence", "X-Precedence"):
        if name.lower() in present and header_text(message, name).strip().lower() == "auto_reply":
            return f"{name}: auto_reply"
    if _AUTO_SUBJECT.search(header_text(message, "Subject")):
        return "an out-of-office subject"
    return None


def from_mail_system(message: Message) -> bool:
    """From MAILER-DAEMON, postmaster or a "Mail Delivery System": a server's report."""
    return bool(_MAIL_SYSTEM.search(str(message.get("From", ""))))
