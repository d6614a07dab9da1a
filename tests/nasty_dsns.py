"""DSNs that hide a password made of distinctive pieces (Zq9, Xk7, Wm3) in every awkward
way: unescaped URL delimiters, percent-encoding, query parameters, quotes, garbage. Shared by
tests/unit/test_dsn_redaction.py and tests/integration/test_cli_dsn_redaction.py."""

PIECES = ("Zq9", "Xk7", "Wm3")

# (id, DSN): every one points at 127.0.0.1 port 1, where nothing listens.
NASTY = [
    ("url-at-and-slash", "postgresql://app:Zq9@Xk7/Wm3@127.0.0.1:1/app"),
    ("url-two-ats", "postgresql://app:Zq9@Xk7@127.0.0.1:1/app"),
    ("url-at-colon", "postgresql://app:Zq9@Xk7:Wm3@127.0.0.1:1/app"),
    ("url-empty-user", "postgres://:Zq9@Xk7@127.0.0.1:1/app"),
    ("url-slash", "postgresql://app:Zq9/Xk7@127.0.0.1:1/app"),
    ("url-slash-numeric", "postgresql://app:12/Zq9Xk7@127.0.0.1:1/app"),
    ("url-slash-query", "postgresql://app:Zq9/Xk7?Wm3@127.0.0.1:1/app"),
    ("url-numeric-slash-query", "postgresql://app:12/Zq9?Xk7@127.0.0.1:1/app"),
    ("url-query-hash", "postgresql://app:Zq9?Xk7#Wm3@127.0.0.1:1/app"),
    ("url-colon", "postgresql://app:Zq9:Xk7@127.0.0.1:1/app"),
    ("url-percent", "postgresql://app:Zq9%40Xk7%2FWm3@127.0.0.1:1/app"),
    ("url-bad-percent", "postgresql://app:Zq9%zzXk7@127.0.0.1:1/app"),
    ("url-space", "postgresql://app:Zq9 Xk7@127.0.0.1:1/app"),
    ("url-bracket", "postgresql://app:Zq9Xk7@[::1/app"),
    ("url-query-password", "postgresql://app@127.0.0.1:1/app?password=Zq9Xk7Wm3"),
    ("url-query-encoded", "postgresql://app@127.0.0.1:1/app?sslmode=disable&password=Zq9%26Xk7"),
    ("url-query-raw-at", "postgresql://app@127.0.0.1:1/app?password=Zq9@Xk7"),
    ("kv-quoted", "host=127.0.0.1 port=1 user=app password='Zq9 Xk7' dbname=app"),
    ("kv-escaped-quote", "host=127.0.0.1 port=1 user=app password='Zq9 \\'Xk7' dbname=app"),
    ("kv-url-chars", "host=127.0.0.1 port=1 user=app password=Zq9@Xk7/Wm3 dbname=app"),
    ("kv-unquoted-space", "host=127.0.0.1 port=1 user=app password=Zq9 Xk7 dbname=app"),
    ("kv-unterminated", "host=127.0.0.1 port=1 user=app password='Zq9 Xk7"),
    ("kv-spaces-around", "host=127.0.0.1 port=1 password = Zq9Xk7 dbname=app"),
    ("kv-uppercase-key", "host=127.0.0.1 port=1 PASSWORD=Zq9Xk7 dbname=app"),
    ("garbage", "Zq9Xk7Wm3 not a dsn"),
    ("garbage-url", "postgresql://Zq9:Xk7@@@///???"),
]
IDS = [name for name, _ in NASTY]
DSNS = [value for _, value in NASTY]
