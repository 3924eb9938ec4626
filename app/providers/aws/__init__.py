"""Amazon EKS provider: provider records, the CloudFormation template, provisioning steps."""
