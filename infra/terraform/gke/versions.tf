terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
}

# Credentials come from the environment (Application Default Credentials,
# GOOGLE_APPLICATION_CREDENTIALS or Workload Identity in CI), never from this file.
provider "google" {
  project = var.project_id
}
