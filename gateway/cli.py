"""Budbringer: the messaging gateway for home-school communication.

Run a command with --help for its options. Settings come from BUDBRINGER_* variables
and an optional --config TOML file (see config/budbringer.example.toml)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from gateway import __version__
from gateway.bench.latency import NO_LATENCY
from gateway.bench.latency import argument as latency_argument
from gateway.errors import BudbringerError, ConfigError, plain_message
from gateway.event_loop import run
from gateway.logs import configure
from gateway.models import Scope
from gateway.settings import Settings, load_settings


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    config = getattr(args, "config", None)
    try:
        return load_settings(Path(config) if config else None, **overrides)
    except SettingsError as exc:
        # A value the environment source cannot parse (BUDBRINGER_CHANNELS=email,sms: a
        # list is JSON there); its message names the variable's field.
        raise ConfigError(f"invalid settings: {exc}") from exc
    except ValidationError as exc:
        rows = "; ".join(
            # a model-wide check (e.g. production secrets) has no loc: its message names it
            ".".join(str(p) for p in err["loc"]) + ": " * bool(err["loc"]) + plain_message(err)
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid settings: {rows}") from exc


async def _serve(settings: Settings, *, api: bool, workers: bool) -> None:
    from gateway.service import Service, run_until_signalled

    await run_until_signalled(Service(settings, api=api, workers=workers))


async def _tenants_create(settings: Settings, name: str, scopes: list[str] | None = None) -> None:
    from gateway.auth import create_tenant
    from gateway.clock import SystemClock
    from gateway.store.backends import open_store

    store = open_store(settings.store_url)
    await store.open()
    try:
        protected = "protected" in (scopes or [])
        tenant, api_key, whsec = await create_tenant(
            store, name, SystemClock().now(), protected=protected
        )
        if protected:  # the staff pages still read the tenant-wide scope
            await store.set_tenant_scopes(tenant.id, ["staff", "protected"])
    finally:
        await store.close()
    print(f"tenant id:       {tenant.id}")
    print(f"api key:         {api_key}")
    print(f"signing secret:  {whsec}")
    print("Store both now: they are shown only this once (only a hash of the key is kept).")


async def _tenants_list(settings: Settings) -> None:
    from gateway.store.backends import open_store

    store = open_store(settings.store_url)
    await store.open()
    try:
        for tenant in await store.list_tenants():
            print(f"{tenant.id}\t{tenant.name}\t{tenant.created_at.isoformat()}")
    finally:
        await store.close()


async def _keys(settings: Settings, args: argparse.Namespace) -> None:
    """``budbringer keys create | list | revoke`` for one tenant."""
    from datetime import timedelta

    from gateway.api.keys import key_view
    from gateway.api.responses import dump
    from gateway.auth import KEY_LIFETIME_MAX_DAYS, create_api_key
    from gateway.clock import SystemClock
    from gateway.store.backends import open_store

    now = SystemClock().now()
    store = open_store(settings.store_url)
    await store.open()
    try:
        if await store.get_tenant(args.tenant) is None:
            raise ConfigError("unknown tenant (see budbringer tenants list)")
        if args.keys_command == "create":
            days = args.expires_in_days
            if days is not None and not 1 <= days <= KEY_LIFETIME_MAX_DAYS:
                raise ConfigError(
                    f"--expires-in-days must be 1 to {KEY_LIFETIME_MAX_DAYS}"
                    " (leave it out for no expiry)"
                )
            expires = now + timedelta(days=days) if days else None
            record, api_key = await create_api_key(
                store,
                args.tenant,
                [Scope(s) for s in args.scope],
                now,
                name=args.name,
                expires_at=expires,
            )
            print(f"key id:   {record.id}")
            print(f"api key:  {api_key}")
            print(f"scopes:   {' '.join(record.scopes)}")
            print(f"expires:  {expires.isoformat() if expires else 'never'}")
            print("Store the key now: it is shown only this once (only a hash of it is kept).")
        elif args.keys_command == "list":
            for key in await store.list_api_keys(args.tenant):
                view = dump(key_view(key, now))
                state = "active" if view["active"] else "revoked" if key.revoked_at else "expired"
                print(
                    f"{key.id}\t{state}\t{','.join(view['scopes'])}\t"
                    f"{view['expires_at'] or 'never'}\t{key.name}"
                )
        elif await store.revoke_api_key(args.tenant, args.key_id, now) is None:
            raise ConfigError("this tenant has no key with that id (see budbringer keys list)")
        else:
            print(f"revoked {args.key_id}")
    finally:
        await store.close()


async def _import_oneroster(settings: Settings, args: argparse.Namespace) -> int:
    """``budbringer import oneroster``: counts on stdout, or one line per problem and 2."""
    from gateway.errors import ValidationFailed
    from gateway.oneroster import (
        ImportOptions,
        apply_oneroster,
        counts,
        describe,
        load_oneroster,
        load_oneroster_zip,
        parse_responsibility_roles,
    )
    from gateway.progress import stages
    from gateway.store.backends import open_store

    try:
        options = ImportOptions(
            phone_region=args.phone_region,
            assume_minor=args.assume_minor,
            skip_invalid_contacts=args.skip_invalid_contacts,
            responsibility_roles=parse_responsibility_roles(args.responsibility_roles),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    path = Path(args.path)
    try:
        # A bar on a terminal (a municipality's export takes many seconds); quiet otherwise.
        with stages(1 if args.dry_run else 3) as step:
            step("reading and checking the export")
            if path.is_file():
                result = load_oneroster_zip(path.read_bytes(), options, limits=settings.archive)
            else:
                result = load_oneroster(path, options)
            if args.dry_run:
                applied = counts(result.batch)
            else:
                store = open_store(settings.store_url)
                await store.open()
                try:
                    if await store.get_tenant(args.tenant) is None:
                        raise ConfigError("unknown tenant (see budbringer tenants list)")
                    applied = await apply_oneroster(store, args.tenant, result.batch, progress=step)
                finally:
                    await store.close()
    except ValidationFailed as exc:
        print(f"budbringer: {exc.message}", file=sys.stderr)
        for error in exc.errors:
            print(describe(error), file=sys.stderr)
        return 2
    if args.dry_run:
        print("dry run: nothing was written")
    for kind, count in applied.items():
        print(f"{kind}: {count}")
    for reason, count in result.skipped.items():
        print(f"skipped {reason}: {count}")
    if result.skipped.get("tobedeleted"):
        # Skipped is not deleted: the stored record and its relations stay, told as before.
        print(
            "note: a tobedeleted row keeps what is stored (the person, their relations);"
            " remove it with POST /v1/directory/delete"
        )
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="budbringer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"budbringer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE", help="a TOML settings file")
        return p

    serve = with_config(sub.add_parser("serve", help="run the HTTP API and the workers"))
    serve.add_argument("--no-workers", action="store_true", help="API only")
    serve.add_argument(
        "--host", help="address to listen on (default: BUDBRINGER_HOST, else 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, help="port to listen on (default: BUDBRINGER_PORT, else 8080)"
    )
    with_config(sub.add_parser("worker", help="run the workers only"))
    with_config(
        sub.add_parser(
            "doctor",
            help="check the store, SMTP, Twilio, FCM and webhook endpoints (sends nothing)",
        )
    )

    tenants = sub.add_parser("tenants", help="manage tenants")
    tsub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = with_config(tsub.add_parser("create", help="create a tenant; prints its keys once"))
    create.add_argument("name")
    create.add_argument(
        "--scope",
        action="append",
        choices=("protected",),
        help="also let the first key see persons with a protected address",
    )
    with_config(tsub.add_parser("list", help="list tenants"))

    keys = sub.add_parser("keys", help="manage a tenant's API keys (rotate, scope, revoke)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kcreate = with_config(ksub.add_parser("create", help="another key; printed once"))
    kcreate.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="what the key may do (repeat for several)",
    )
    kcreate.add_argument("--name", default="", help="a label, e.g. the app that holds it")
    kcreate.add_argument("--expires-in-days", type=int, metavar="DAYS", help="default: never")
    klist = with_config(ksub.add_parser("list", help="the tenant's keys (never the keys)"))
    krevoke = with_config(ksub.add_parser("revoke", help="revoke a key: it stops at once"))
    krevoke.add_argument("key_id")
    for p in (kcreate, klist, krevoke):
        p.add_argument("--tenant", required=True, metavar="TENANT_ID")

    imports = sub.add_parser("import", help="import a directory from another system's export")
    isub = imports.add_subparsers(dest="import_command", required=True)
    oneroster = with_config(
        isub.add_parser("oneroster", help="a OneRoster 1.1/1.2 CSV export (folder or zip)")
    )
    oneroster.add_argument("path", help="the folder with manifest.csv, or a zip of its files")
    oneroster.add_argument("--tenant", required=True, metavar="TENANT_ID")
    oneroster.add_argument(
        "--phone-region", default="NO", help="region of numbers without +country (default NO)"
    )
    oneroster.add_argument(
        "--assume-minor",
        action="store_true",
        help="give students without a birth date a placeholder one (age 10) instead of failing",
    )
    oneroster.add_argument(
        "--skip-invalid-contacts",
        action="store_true",
        help="leave invalid phone numbers and emails out (with a warning) instead of failing",
    )
    oneroster.add_argument(
        "--responsibility-roles",
        default="parent,guardian",
        metavar="ROLES",
        help="roles whose new relations get parental responsibility (default parent,guardian;"
        " '' for none)",
    )
    oneroster.add_argument("--dry-run", action="store_true", help="validate only; write nothing")

    demo = sub.add_parser("demo", help="run the demo municipality end to end")
    demo.add_argument("--dir", default="demo", help="where the demo keeps its files")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep the gateway running after the demo and print staff and parent page links",
    )
    demo.add_argument("--port", type=int, default=8080, help="the port with --serve")

    bench = sub.add_parser("bench", help="the emergency-broadcast benchmark (a few minutes)")
    bench.add_argument("--children", type=int, default=12_000, help="size of the municipality")
    bench.add_argument("--seed", type=int, default=1, help="seed of the synthetic directory")
    bench.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    bench.add_argument(
        "--workers", type=int, default=1, help="gateway processes (only 1 with sqlite)"
    )
    bench.add_argument("--absence-events", type=int, default=300)
    bench.add_argument(
        "--concurrency", type=int, help="sends in flight, gateway and ceiling (default: settings)"
    )
    bench.add_argument(
        "--smtp-connections",
        type=int,
        help="SMTP pool, gateway and ceiling (default: settings)",
    )
    bench.add_argument(
        "--timeout", type=float, default=240.0, help="seconds each stage may wait at most"
    )
    bench.add_argument(
        "--latency",
        type=latency_argument,
        default=NO_LATENCY,
        help="how long the provider sinks take to answer: 80ms, or 50ms:300ms (median:p99, "
        "the slowest in 1000 takes 2 s); the ceiling meets the same",
    )
    bench.add_argument(
        "--scenario",
        choices=("emergency", "mixed", "urgent"),
        default="emergency",
        help="emergency: one emergency to every unit, then absence alerts; mixed: a general "
        "notice to every unit, and during it an emergency to one unit and the absence alerts; "
        "urgent: as mixed, during an emergency to every unit",
    )
    bench.add_argument(
        "--urgent-handoff",
        type=int,
        help="the gateway's DISPATCH__URGENT_HANDOFF (0: small urgent work is queued like "
        "any other, as when another process takes it; default: the setting's)",
    )
    bench.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default=Settings.model_fields["event_loop"].default,
        help="the gateway's event loop (BUDBRINGER_EVENT_LOOP) and the ceiling's (default: "
        "the setting's default)",
    )
    bench.add_argument(
        "--redis-url",
        help="the Redis to use with --backend redis (default: a redis-server of its own, "
        "so the command counts are the gateway's alone)",
    )
    bench.add_argument(
        "--worker-cpu",
        type=float,
        metavar="FRACTION",
        help="put each gateway process (serve and every worker) in a cgroup of its own "
        "with this share of one core as CFS quota, so the sinks and Redis cannot take it "
        "(needs a writable cgroup cpu controller: root)",
    )
    bench.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    bench.add_argument(
        "--profile", metavar="FILE", help="py-spy collapsed stacks of the gateway's emergency"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
            settings = _settings(args, **overrides)
            configure(settings.log_level)
            run(_serve(settings, api=True, workers=not args.no_workers), settings.event_loop)
        elif args.command == "doctor":
            from gateway.doctor import doctor

            return asyncio.run(doctor(_settings(args)))
        elif args.command == "worker":
            settings = _settings(args)
            configure(settings.log_level)
            run(_serve(settings, api=False, workers=True), settings.event_loop)
        elif args.command == "tenants":
            settings = _settings(args)
            if args.tenants_command == "create":
                asyncio.run(_tenants_create(settings, args.name, args.scope))
            else:
                asyncio.run(_tenants_list(settings))
        elif args.command == "keys":
            asyncio.run(_keys(_settings(args), args))
        elif args.command == "import":
            return asyncio.run(_import_oneroster(_settings(args), args))
        elif args.command == "demo":
            from gateway.demo import run_demo

            port = args.port if args.serve else 0
            # Its gateway's warnings masked as the service's are (a token in a bad
            # request's line, an address in a library's error); its own table is print.
            configure("WARNING")
            try:
                return asyncio.run(run_demo(Path(args.dir), serve=args.serve, port=port))
            except KeyboardInterrupt:
                return 0
        elif args.command == "bench":
            from gateway.bench.main import main as bench_main
            from gateway.bench.run import Options
            from gateway.settings import DispatchSettings

            return bench_main(
                Options(
                    children=args.children,
                    seed=args.seed,
                    backend=args.backend,
                    workers=args.workers,
                    absence_events=args.absence_events,
                    concurrency=args.concurrency or DispatchSettings().concurrency,
                    **(
                        {"smtp_connections": args.smtp_connections} if args.smtp_connections else {}
                    ),
                    timeout=args.timeout,
                    keep=args.keep,
                    profile=Path(args.profile).resolve() if args.profile else None,
                    latency=args.latency,
                    scenario=args.scenario,
                    event_loop=args.event_loop,
                    urgent_handoff=args.urgent_handoff,
                    worker_cpu=args.worker_cpu,
                    **({"redis_url": args.redis_url} if args.redis_url else {}),
                )
            )
    except BudbringerError as exc:
        print(f"budbringer: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file or folder the command was given or set up with cannot be used: one line
        # naming it, not a traceback (the error is the operator's to fix, not a bug).
        where = f": {exc.filename}" if exc.filename else ""
        print(f"budbringer: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
