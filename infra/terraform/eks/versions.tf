terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
  }
}

# Credentials come from the environment (AWS_PROFILE, SSO, an assumed role or
# OIDC in CI), never from this file.
provider "aws" {
  region = var.region
}
