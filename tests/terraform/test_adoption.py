"""What an interrupted apply left in the cloud, mapped to the addresses the configuration is about to create
(terraform/adoption.py): table tests of the pure mapping, the plan JSON reading and the import blocks."""

from __future__ import annotations

from typing import Any

import pytest

from paybill.terraform.adoption import (
    Adoption,
    CloudObject,
    Import,
    PlannedCreate,
    adopt,
    import_blocks,
    planned_creates,
)

T = "acme"
OURS = {"paybill.dev/tenant": T, "paybill.dev/managed-by": "paybill"}


def tagged(name: str = "", **extra: str) -> dict[str, str]:
    return {**OURS, **({"Name": name} if name else {}), **extra}


SILO = [
    PlannedCreate("aws_vpc.tenant", "aws_vpc", tag_name="paybill-acme"),
    PlannedCreate("aws_subnet.tenant[0]", "aws_subnet", tag_name="paybill-acme-0"),
    PlannedCreate("aws_subnet.tenant[1]", "aws_subnet", tag_name="paybill-acme-1"),
    PlannedCreate("aws_security_group.database", "aws_security_group", frozenset({"paybill-acme-database"})),
    PlannedCreate("aws_s3_bucket.tenant", "aws_s3_bucket", frozenset({"paybill-acme"})),
    PlannedCreate("aws_iam_role.tenant", "aws_iam_role", frozenset({"paybill-acme"})),
    PlannedCreate("aws_iam_role_policy.bucket", "aws_iam_role_policy", frozenset({"bucket"})),
    PlannedCreate("terraform_data.password", "terraform_data"),
]
VPC = CloudObject("aws_vpc", "vpc-1", tags=tagged("paybill-acme"))
SUBNET_0 = CloudObject("aws_subnet", "subnet-a", tags=tagged("paybill-acme-0"))
SUBNET_1 = CloudObject("aws_subnet", "subnet-b", tags=tagged("paybill-acme-1"))
GROUP = CloudObject("aws_security_group", "sg-1", "paybill-acme-database", tagged())
BUCKET = CloudObject("aws_s3_bucket", "paybill-acme", "paybill-acme", tagged())
ROLE = CloudObject("aws_iam_role", "paybill-acme", "paybill-acme", tagged())
POLICY = CloudObject("aws_iam_role_policy", "paybill-acme:bucket", "bucket", parent=("aws_iam_role", "paybill-acme"))


def imports(*pairs: tuple[str, CloudObject]) -> tuple[Import, ...]:
    return tuple(sorted((Import(address, obj.id, obj.type) for address, obj in pairs), key=lambda i: i.address))


CASES: list[tuple[str, list[CloudObject], set[tuple[str, str]], Adoption]] = [
    ("nothing found: nothing to adopt", [], set(), Adoption()),
    (
        "everything a killed silo apply made, each to its address",
        [VPC, SUBNET_0, SUBNET_1, GROUP, BUCKET, ROLE, POLICY],
        set(),
        Adoption(
            imports(
                ("aws_vpc.tenant", VPC),
                ("aws_subnet.tenant[0]", SUBNET_0),
                ("aws_subnet.tenant[1]", SUBNET_1),
                ("aws_security_group.database", GROUP),
                ("aws_s3_bucket.tenant", BUCKET),
                ("aws_iam_role.tenant", ROLE),
                ("aws_iam_role_policy.bucket", POLICY),
            )
        ),
    ),
    (
        "what the state holds already is left alone",
        [VPC, BUCKET],
        {("aws_vpc", "vpc-1")},
        Adoption(imports(("aws_s3_bucket.tenant", BUCKET))),
    ),
    (
        "an inline policy of a role the state holds is adopted",
        [POLICY],
        {("aws_iam_role", "paybill-acme")},
        Adoption(imports(("aws_iam_role_policy.bucket", POLICY))),
    ),
    (
        "two untracked VPCs with the tenant's tags: stop, naming both",
        [VPC, CloudObject("aws_vpc", "vpc-2", tags=tagged("paybill-acme"))],
        set(),
        Adoption(problems=("aws_vpc.tenant could be any of 2 untracked aws_vpc: vpc-1, vpc-2",)),
    ),
    (
        "a role named as ours but tagged for another tenant is never adopted, nor its policy",
        [CloudObject("aws_iam_role", "paybill-acme", "paybill-acme", {**OURS, "paybill.dev/tenant": "evil"}), POLICY],
        set(),
        Adoption(
            refused=(
                "aws_iam_role paybill-acme: tagged for tenant 'evil'",
                "aws_iam_role_policy paybill-acme:bucket (bucket): "
                "belongs to aws_iam_role paybill-acme, which is not the tenant's to adopt",
            )
        ),
    ),
    (
        "a bucket with our name but no managed-by tag is never adopted",
        [CloudObject("aws_s3_bucket", "paybill-acme", "paybill-acme", {"paybill.dev/tenant": T})],
        set(),
        Adoption(refused=("aws_s3_bucket paybill-acme: lacks the paybill.dev/managed-by=paybill tag",)),
    ),
    (
        "an untagged object is never adopted",
        [CloudObject("aws_vpc", "vpc-3")],
        set(),
        Adoption(refused=("aws_vpc vpc-3: lacks the paybill.dev/tenant tag",)),
    ),
    (
        "a name the configuration does not give is no match",
        [CloudObject("aws_s3_bucket", "paybill-other", "paybill-other", tagged())],
        set(),
        Adoption(problems=("aws_s3_bucket paybill-other is the tenant's but nothing in the configuration creates it",)),
    ),
]


@pytest.mark.parametrize(("found", "tracked", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_untracked_objects_map_to_planned_addresses_or_stop_named(
    found: list[CloudObject], tracked: set[tuple[str, str]], expected: Adoption
) -> None:
    assert adopt(T, found, tracked, SILO) == expected


def test_a_tagged_object_left_over_beside_the_one_the_state_holds_stops_the_run() -> None:
    planned = [create for create in SILO if create.type != "aws_vpc"]  # the state has the VPC: no create planned
    extra = CloudObject("aws_vpc", "vpc-9", tags=tagged("paybill-acme"))
    assert adopt(T, [extra], {("aws_vpc", "vpc-1")}, planned).problems == (
        "aws_vpc vpc-9 is the tenant's but nothing in the configuration creates it",
    )


def test_one_object_matching_two_addresses_is_not_guessed() -> None:
    planned = [PlannedCreate("aws_vpc.a", "aws_vpc"), PlannedCreate("aws_vpc.b", "aws_vpc")]
    untagged_name = CloudObject("aws_vpc", "vpc-1", tags=OURS)
    result = adopt(T, [untagged_name], set(), planned)
    assert result.imports == () and result.problems[0] == "aws_vpc vpc-1 could be any of aws_vpc.a, aws_vpc.b"


def test_planned_creates_read_names_and_name_tags_from_the_plan_json() -> None:
    plan: dict[str, Any] = {
        "resource_changes": [
            {
                "address": "aws_subnet.tenant[1]",
                "mode": "managed",
                "type": "aws_subnet",
                "change": {"actions": ["create"], "after": {"tags": {"Name": "paybill-acme-1"}}},
            },
            {
                "address": "aws_db_instance.tenant",
                "mode": "managed",
                "type": "aws_db_instance",
                "change": {
                    "actions": ["delete", "create"],
                    "after": {"identifier": "paybill-acme", "name": "tenant_acme"},
                },
            },
            {
                "address": "aws_s3_bucket.tenant",
                "mode": "managed",
                "type": "aws_s3_bucket",
                "change": {"actions": ["no-op"], "after": {"bucket": "paybill-acme"}},
            },
            {
                "address": "data.aws_region.here",
                "mode": "data",
                "type": "aws_region",
                "change": {"actions": ["read"], "after": {}},
            },
        ]
    }
    assert planned_creates(plan) == [
        PlannedCreate("aws_subnet.tenant[1]", "aws_subnet", frozenset(), "paybill-acme-1"),
        PlannedCreate("aws_db_instance.tenant", "aws_db_instance", frozenset({"paybill-acme", "tenant_acme"})),
    ]


def test_import_blocks_quote_ids_and_refuse_anything_but_an_address() -> None:
    text = import_blocks([Import("aws_subnet.tenant[0]", "subnet-a", "aws_subnet"), Import("x.y", 'a"${b}', "x")])
    assert text == (
        'import {\n  to = aws_subnet.tenant[0]\n  id = "subnet-a"\n}\n\nimport {\n  to = x.y\n  id = "a\\"$${b}"\n}\n'
    )
    with pytest.raises(ValueError, match="not a resource address"):
        import_blocks([Import("aws_vpc.tenant\n}\nresource", "vpc-1", "aws_vpc")])
