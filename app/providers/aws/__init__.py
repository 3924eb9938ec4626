"""Amazon EKS provider: provider records, the CloudFormation template, provisioning steps.

`POST /api/v1/projects/{id}/clusters/eks` stores a cluster (status `provisioning`) and its
`EksProvider` record, then the `eks_provision` actor runs one step per message:
assume the customer's role (external ID, session `clusterport-cluster-<id>`) -> create the
stack `clusterport-cluster-<id>` from templates/eks_cluster.yaml -> poll DescribeStacks by
delayed re-enqueue -> configure the cluster (EKS token, aws-auth node role mapping, the
`clusterport` service account and its token) -> `done`; any failure -> `failed` with a code.
The temporary credentials are cleared whenever provisioning ends. `eks_reconcile` (at worker
start-up and every CLUSTERPORT_EKS_RECONCILE_INTERVAL_SECONDS) re-queues stalled records.
`GET /api/v1/clusters/{id}/provisioning` and `clusterport clusters wait ID` show progress.

The customer's provisioning role must trust clusterport's AWS identity with the condition
`sts:ExternalId` = the project's external ID (`GET /api/v1/projects/{id}/eks/external-id`)
and be allowed to create the template's resources (EKS, IAM roles, EC2, Auto Scaling).
Settings: app/providers/aws/settings.py (CLUSTERPORT_EKS_*), app/aws/settings.py
(CLUSTERPORT_AWS_*).
"""
