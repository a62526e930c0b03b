# AWS Budgets: a COST budget that excludes credits and refunds, so it measures
# gross burn against a credit pool (the invoice itself stays at $0 while credits
# last and would never trip a budget). Alerts at 50/80/100% of actual spend and
# at 100% of forecast spend; at 100% of actual spend a budget action attaches a
# deny policy to the head role, so the Ray autoscaler cannot launch any more
# instances.
#
# This is the backstop, not the primary cap: Budgets evaluates cost data a few
# times a day and billing data lags by hours, so a fast-burning cluster can
# overshoot before the action fires. dfray's own spend governor (node uptime x
# price, enforced by the run) is what ends a run cleanly at its cap. The action
# also leaves running instances alone: it stops growth, it does not terminate.
# To recover after raising the budget, reset the action in the Budgets console or
# `aws budgets execute-budget-action --execution-type RESET_BUDGET_ACTION ...`.

locals {
  budget_name = "${var.cluster_name}-credit-burn"

  budget_notifications = {
    actual_50    = { threshold = 50, type = "ACTUAL" }
    actual_80    = { threshold = 80, type = "ACTUAL" }
    actual_100   = { threshold = 100, type = "ACTUAL" }
    forecast_100 = { threshold = 100, type = "FORECASTED" }
  }
}

resource "aws_budgets_budget" "burn" {
  name         = local.budget_name
  budget_type  = "COST"
  limit_amount = format("%.2f", var.budget_usd)
  limit_unit   = "USD"
  time_unit    = var.budget_time_unit

  cost_types {
    include_credit             = false
    include_refund             = false
    include_discount           = true
    include_other_subscription = true
    include_recurring          = true
    include_subscription       = true
    include_support            = true
    include_tax                = true
    include_upfront            = true
    use_amortized              = false
    use_blended                = false
  }

  dynamic "notification" {
    for_each = local.budget_notifications

    content {
      comparison_operator        = "GREATER_THAN"
      threshold                  = notification.value.threshold
      threshold_type             = "PERCENTAGE"
      notification_type          = notification.value.type
      subscriber_email_addresses = var.alert_emails
    }
  }
}

# What the action attaches to the head role at the cap. An explicit Deny beats the
# head role's own Allow for RunInstances. StartInstances / fleet / spot-request
# calls are denied too, so no other path to new capacity remains.
data "aws_iam_policy_document" "deny_new_instances" {
  statement {
    sid    = "BudgetCapReachedNoNewInstances"
    effect = "Deny"
    actions = [
      "ec2:RunInstances",
      "ec2:StartInstances",
      "ec2:CreateFleet",
      "ec2:RequestSpotInstances",
      "ec2:RequestSpotFleet",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_policy" "deny_new_instances" {
  name        = "${var.cluster_name}-budget-cap-deny-run-instances"
  description = "Attached to the Ray head role by AWS Budgets when ${local.budget_name} reaches 100%"
  policy      = data.aws_iam_policy_document.deny_new_instances.json
}

# Role AWS Budgets assumes to run the action: it may attach/detach exactly the
# deny policy above, on exactly the head role, and nothing else.
data "aws_iam_policy_document" "budgets_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["budgets.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "budget_action" {
  name               = "${var.cluster_name}-budget-action"
  description        = "Assumed by AWS Budgets to attach the deny-RunInstances policy to the Ray head role"
  assume_role_policy = data.aws_iam_policy_document.budgets_assume.json
}

data "aws_iam_policy_document" "budget_action" {
  statement {
    sid       = "AttachOnlyTheDenyPolicyToTheHeadRole"
    actions   = ["iam:AttachRolePolicy", "iam:DetachRolePolicy"]
    resources = [aws_iam_role.head.arn]

    condition {
      test     = "ArnEquals"
      variable = "iam:PolicyARN"
      values   = [aws_iam_policy.deny_new_instances.arn]
    }
  }
}

resource "aws_iam_role_policy" "budget_action" {
  name   = "attach-deny-policy-to-head"
  role   = aws_iam_role.budget_action.id
  policy = data.aws_iam_policy_document.budget_action.json
}

resource "aws_budgets_budget_action" "stop_new_instances" {
  budget_name        = aws_budgets_budget.burn.name
  action_type        = "APPLY_IAM_POLICY"
  approval_model     = "AUTOMATIC"
  notification_type  = "ACTUAL"
  execution_role_arn = aws_iam_role.budget_action.arn

  action_threshold {
    action_threshold_type  = "PERCENTAGE"
    action_threshold_value = 100
  }

  definition {
    iam_action_definition {
      policy_arn = aws_iam_policy.deny_new_instances.arn
      roles      = [aws_iam_role.head.name]
    }
  }

  dynamic "subscriber" {
    for_each = toset(var.alert_emails)

    content {
      address           = subscriber.value
      subscription_type = "EMAIL"
    }
  }

  depends_on = [aws_iam_role_policy.budget_action]
}
