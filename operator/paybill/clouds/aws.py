"""AWS through boto3: EC2 instances and RDS databases by the `paybill.dev/tenant` tag, VPC quota for silo tenants.

Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) from the Plan's Secret. botocore's
own retries are off; RetryPolicy retries (see retry.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from paybill.terraform.adoption import CloudObject
from paybill.terraform.models import MODEL_SUFFIXES

from . import tags
from .base import AdapterBase
from .model import Cloud, CloudError, CloudPlan, PowerState, Preflight, Resource, Verdict
from .power import wait_for_state
from .retry import Failure, retry_after

CLOUD = Cloud.AWS
VPC_QUOTA = ("vpc", "L-F678F1CE")  # VPCs per Region: a silo tenant gets one
_STATES = {
    "pending": PowerState.STARTING,
    "running": PowerState.RUNNING,
    "stopping": PowerState.STOPPING,
    "stopped": PowerState.STOPPED,
    "shutting-down": PowerState.TERMINATED,
    "terminated": PowerState.TERMINATED,
    "available": PowerState.RUNNING,  # RDS
    "starting": PowerState.STARTING,  # RDS
}
_BAD_CREDENTIALS = frozenset(
    {"InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure", "UnrecognizedClientException", "ExpiredToken"}
)
_NOT_FOUND = frozenset(
    {"InvalidInstanceID.NotFound", "DBInstanceNotFound", "NoSuchResource", "NoSuchResourceException"}
)
# "there is none by that name" from the lookups of named objects (an empty answer, not an error)
_ABSENT = frozenset(
    {"DBInstanceNotFound", "DBSubnetGroupNotFoundFault", "NoSuchBucket", "NoSuchEntity", "404", "NoSuchTagSet"}
)


def _read(exc: Exception) -> Failure | None:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        code = error.get("Code", "Unknown")
        if code in {"Throttling", "ThrottlingException", "RequestLimitExceeded"}:
            status = 429
        return Failure(
            status, code, error.get("Message", ""), retry_after(meta.get("HTTPHeaders", {}).get("retry-after"))
        )
    if isinstance(exc, BotoCoreError):
        return Failure(None, type(exc).__name__, str(exc))
    return None


class AwsAdapter(AdapterBase):
    cloud = CLOUD
    POLL_SECONDS, DEADLINE_SECONDS, PAGE_SIZE = 2.0, 600.0, 100
    PUBLIC_KEYS = frozenset({"AWS_ACCESS_KEY_ID"})
    _read = staticmethod(_read)

    def _connect(self, credentials: Mapping[str, str], endpoint: str | None) -> None:
        session = boto3.session.Session(
            aws_access_key_id=credentials.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
        )
        config = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60)

        def client(service: str, region_name: str) -> Any:
            return session.client(service, region_name=region_name, endpoint_url=endpoint, config=config)

        self._sts = client("sts", "us-east-1")
        self._home = client("ec2", "us-east-1")  # DescribeRegions answers from any region
        self._ec2 = client("ec2", self.region)
        self._rds = client("rds", self.region)
        self._quotas = client("service-quotas", self.region)
        self._s3 = client("s3", self.region)
        self._iam = client("iam", "us-east-1")  # IAM is global

    def preflight(self, plan: CloudPlan) -> Preflight:
        try:
            self._call(self._sts.get_caller_identity)
        except CloudError as error:
            if error.code in _BAD_CREDENTIALS:
                return Preflight(CLOUD, Verdict.INVALID_CREDENTIALS, f"credentials refused ({error.code})")
            raise
        regions = self._call(lambda: self._home.describe_regions(AllRegions=True))["Regions"]
        if plan.region not in {region["RegionName"] for region in regions}:
            return Preflight(CLOUD, Verdict.UNKNOWN_REGION, f"region {plan.region} does not exist (DescribeRegions)")
        if plan.networks == 0:
            return Preflight(CLOUD, Verdict.OK, f"credentials valid, region {plan.region} exists")
        limit = self._call(lambda: self._quotas.get_service_quota(ServiceCode=VPC_QUOTA[0], QuotaCode=VPC_QUOTA[1]))
        used = sum(
            len(page["Vpcs"]) for page in self._pages(self._ec2.describe_vpcs, "Vpcs", MaxResults=self.page_size)
        )
        available = limit["Quota"]["Value"] - used
        quota = {"vpcs": (available, float(plan.networks))}
        if available < plan.networks:
            return Preflight(
                CLOUD,
                Verdict.INSUFFICIENT_QUOTA,
                f"VPCs per region ({VPC_QUOTA[1]}): {available:g} available of {limit['Quota']['Value']:g}, "
                f"a {plan.isolation} tenant needs {plan.networks}",
                quota,
            )
        return Preflight(CLOUD, Verdict.OK, f"credentials valid, region {plan.region} exists, quota suffices", quota)

    def _pages(
        self, method: Callable[..., dict[str, Any]], key: str, token: str = "NextToken", **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Every page of a paginated Describe call (NextToken or Marker), each page one call."""
        marker: str | None = None
        while True:
            arguments = {**kwargs, **({token: marker} if marker else {})}
            page = self._call(partial(method, **arguments))
            yield page
            marker = page.get(token)
            if not marker:
                return

    def _instances(self, filters: list[dict[str, Any]]) -> list[Resource]:
        found = []
        for page in self._pages(
            self._ec2.describe_instances, "Reservations", Filters=filters, MaxResults=self.page_size
        ):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    found.append(
                        self._resource(
                            "instance", instance["InstanceId"], instance["State"]["Name"], instance.get("Tags", [])
                        )
                    )
        return found

    def _databases(self) -> list[Resource]:
        found = []
        for page in self._pages(
            self._rds.describe_db_instances, "DBInstances", token="Marker", MaxRecords=max(20, self.page_size)
        ):
            for database in page["DBInstances"]:
                resource = self._resource(
                    "database",
                    database["DBInstanceIdentifier"],
                    database["DBInstanceStatus"],
                    database.get("TagList", []),
                )
                if resource.tenant:
                    found.append(resource)
        return found

    def _resource(self, kind: str, ident: str, state: str, found: list[dict[str, str]]) -> Resource:
        tenant, plan, cost_center = tags.read(CLOUD, {tag["Key"]: tag["Value"] for tag in found})
        name = next((tag["Value"] for tag in found if tag["Key"] == "Name"), ident)
        return Resource(
            CLOUD, kind, ident, name, _STATES.get(state, PowerState.OTHER), tenant, plan, cost_center, self.region
        )

    def inventory(self, tenant: str) -> list[Resource]:
        instances = self._instances([{"Name": f"tag:{tags.tenant_key(CLOUD)}", "Values": [tenant]}])
        return [r for r in instances + self._databases() if r.tenant == tenant]  # never trust a filter alone

    def _power_targets(self, tenant: str) -> list[Resource]:
        """The tenant's EC2 instances and RDS instances: a suspended tenant's database is stopped too (else the
        tenant keeps using it, and paying for nothing)."""
        return [r for r in self.inventory(tenant) if r.kind in ("instance", "database")]

    def _act(self, ids: tuple[str, ...], wanted: PowerState) -> None:
        stop = wanted is PowerState.STOPPED
        instances = [i for i in ids if i.startswith("i-")]
        databases = [i for i in ids if not i.startswith("i-")]
        if instances:
            if stop:
                self._call(lambda: self._ec2.stop_instances(InstanceIds=instances))
            else:
                self._call(lambda: self._ec2.start_instances(InstanceIds=instances))
        rds_action = self._rds.stop_db_instance if stop else self._rds.start_db_instance
        for database in databases:
            self._call(partial(rds_action, DBInstanceIdentifier=database))
        wait_for_state(lambda: self._states(instances, databases), wanted, self.poll_seconds, self.deadline_seconds)

    def _states(self, instances: list[str], databases: list[str]) -> list[PowerState]:
        found = [r.state for r in self._instances([{"Name": "instance-id", "Values": instances}])] if instances else []
        return found + [r.state for r in self._databases() if r.id in databases]

    def _tagged(self) -> list[Resource]:
        return self._instances([{"Name": "tag-key", "Values": [tags.tenant_key(CLOUD)]}]) + self._databases()

    # -- what an interrupted apply may have left untracked (terraform/adoption.py decides what is adopted) ------------

    def tenant_objects(self, tenant: str) -> list[CloudObject]:
        """The tenant's VPCs, subnets and security groups by its tag; its DB instance, DB subnet group, bucket and IAM
        role (with the role's inline policies) by the names the modules give them: paybill-<tenant> (silo), and
        paybill-<tenant>-bridge and -pooled (each model names its objects apart)."""
        by_tag = [{"Name": f"tag:{tags.tenant_key(CLOUD)}", "Values": [tenant]}]
        named: list[CloudObject] = []
        for name in (f"paybill-{tenant}", *(f"paybill-{tenant}-{model}" for model in MODEL_SUFFIXES)):
            named += [
                *self._named(self._db_instance, name),
                *self._named(self._db_subnet_group, name),
                *self._named(self._bucket, name),
                *self._role_objects(name),
            ]
        return [
            *self._ec2_objects("aws_vpc", self._ec2.describe_vpcs, "Vpcs", "VpcId", by_tag),
            *self._ec2_objects("aws_subnet", self._ec2.describe_subnets, "Subnets", "SubnetId", by_tag),
            *self._ec2_objects(
                "aws_security_group", self._ec2.describe_security_groups, "SecurityGroups", "GroupId", by_tag
            ),
            *named,
        ]

    def _ec2_objects(
        self, kind: str, method: Callable[..., dict[str, Any]], key: str, id_key: str, filters: list[dict[str, Any]]
    ) -> list[CloudObject]:
        found = []
        for page in self._pages(method, key, Filters=filters):
            for item in page[key]:
                name = item.get("GroupName", "") if kind == "aws_security_group" else ""
                found.append(CloudObject(kind, item[id_key], name, _tag_map(item.get("Tags"))))
        return found

    def _named(self, lookup: Callable[[str], CloudObject], name: str) -> list[CloudObject]:
        """The object of that name, or none when the cloud has none by it."""
        try:
            return [lookup(name)]
        except CloudError as error:
            if error.code in _ABSENT:
                return []
            raise

    def _db_instance(self, name: str) -> CloudObject:
        found = self._call(lambda: self._rds.describe_db_instances(DBInstanceIdentifier=name))["DBInstances"][0]
        return CloudObject("aws_db_instance", name, name, _tag_map(found.get("TagList")))

    def _db_subnet_group(self, name: str) -> CloudObject:
        group = self._call(lambda: self._rds.describe_db_subnet_groups(DBSubnetGroupName=name))["DBSubnetGroups"][0]
        listed = self._call(lambda: self._rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"]))
        return CloudObject("aws_db_subnet_group", name, name, _tag_map(listed.get("TagList")))

    def _bucket(self, name: str) -> CloudObject:
        self._call(lambda: self._s3.head_bucket(Bucket=name))
        try:
            found = self._call(lambda: self._s3.get_bucket_tagging(Bucket=name)).get("TagSet")
        except CloudError as error:
            if error.code != "NoSuchTagSet":
                raise
            found = []
        return CloudObject("aws_s3_bucket", name, name, _tag_map(found))

    def _role_objects(self, name: str) -> list[CloudObject]:
        """The role and its inline policies (which carry no tags: they are the role's)."""
        roles = self._named(self._role, name)
        if not roles:
            return []
        listed = self._call(lambda: self._iam.list_role_policies(RoleName=name)).get("PolicyNames", [])
        policies = [
            CloudObject("aws_iam_role_policy", f"{name}:{policy}", policy, parent=("aws_iam_role", name))
            for policy in listed
        ]
        return roles + policies

    def _role(self, name: str) -> CloudObject:
        self._call(lambda: self._iam.get_role(RoleName=name))
        listed = self._call(lambda: self._iam.list_role_tags(RoleName=name)).get("Tags")
        return CloudObject("aws_iam_role", name, name, _tag_map(listed))


def _tag_map(found: list[dict[str, str]] | None) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in found or []}
